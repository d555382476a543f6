#include "common/zip_check.h"

#include <zip.h>

#include <cerrno>
#include <cstdint>
#include <memory>
#include <vector>

#include "absl/strings/str_cat.h"

namespace distill {
namespace {

struct ZipCloser {
  void operator()(zip_t* archive) const { zip_discard(archive); }
};
struct ZipFileCloser {
  void operator()(zip_file_t* file) const { zip_fclose(file); }
};

}  // namespace

absl::Status CheckZipArchive(const std::string& path) {
  int code = 0;
  // ZIP_CHECKCONS: the central directory must agree with the local headers.
  std::unique_ptr<zip_t, ZipCloser> archive(
      zip_open(path.c_str(), ZIP_RDONLY | ZIP_CHECKCONS, &code));
  if (archive == nullptr) {
    zip_error_t error;
    zip_error_init_with_code(&error, code);
    const std::string reason = zip_error_strerror(&error);
    zip_error_fini(&error);
    if (code == ZIP_ER_NOENT) {
      return absl::NotFoundError(absl::StrCat(path, ": no such file"));
    }
    return absl::DataLossError(
        absl::StrCat(path, " is not a whole zip archive (", reason, ")"));
  }
  const zip_int64_t entries = zip_get_num_entries(archive.get(), 0);
  std::vector<char> buffer(1 << 20);
  for (zip_int64_t i = 0; i < entries; ++i) {
    const char* name = zip_get_name(archive.get(), i, 0);
    const std::string entry = name != nullptr ? name : absl::StrCat("#", i);
    std::unique_ptr<zip_file_t, ZipFileCloser> file(
        zip_fopen_index(archive.get(), i, 0));
    if (file == nullptr) {
      return absl::DataLossError(
          absl::StrCat(path, ": entry ", entry, " cannot be read (",
                       zip_strerror(archive.get()), ")"));
    }
    // zip_fread checks the CRC-32 when the entry's last byte is read.
    zip_int64_t n = 0;
    uint64_t size = 0;
    while ((n = zip_fread(file.get(), buffer.data(), buffer.size())) > 0) {
      size += static_cast<uint64_t>(n);
    }
    if (n < 0) {
      return absl::DataLossError(
          absl::StrCat(path, ": entry ", entry, " is damaged (",
                       zip_file_strerror(file.get()), ")"));
    }
    // The size the directory states is what LibTorch allocates: a lie there
    // (4 GB stated for 228 bytes) is not caught by the CRC-32.
    zip_stat_t stat;
    zip_stat_init(&stat);
    if (zip_stat_index(archive.get(), i, 0, &stat) != 0 ||
        !(stat.valid & ZIP_STAT_SIZE) || stat.size != size) {
      return absl::DataLossError(absl::StrCat(
          path, ": entry ", entry, " holds ", size,
          " bytes but the archive's directory states ",
          (stat.valid & ZIP_STAT_SIZE) ? absl::StrCat(stat.size) : "none"));
    }
  }
  return absl::OkStatus();
}

}  // namespace distill
