#include "common/file.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"

namespace distill {
namespace {

// fsync of a file or a folder (`flags` O_DIRECTORY) by path.
absl::Status Sync(const std::string& path, int flags) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | flags);
  if (fd < 0) {
    return absl::ErrnoToStatus(
        errno, absl::StrCat("cannot open ", path, " to flush it to disk"));
  }
  const int rc = ::fsync(fd);
  const int error = errno;
  ::close(fd);
  if (rc != 0) {
    return absl::DataLossError(absl::StrCat(
        "cannot flush ", path, " to disk: ", std::strerror(error)));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read ", path));
  std::stringstream bytes;
  bytes << in.rdbuf();
  return bytes.str();
}

absl::Status WriteFileAtomically(
    const std::string& path,
    const std::function<absl::Status(const std::string& tmp)>& write) {
  const std::string tmp = absl::StrCat(path, ".tmp.", ::getpid());
  absl::Status status = write(tmp);
  // The bytes reach the disk before the name does, and the name before the
  // caller (pruning older checkpoints, say) relies on it: a crash leaves the
  // old file or the whole new one.
  if (status.ok()) status = Sync(tmp, 0);
  if (status.ok() && std::rename(tmp.c_str(), path.c_str()) != 0) {
    status =
        absl::InternalError(absl::StrCat("cannot rename ", tmp, " to ", path));
  }
  if (!status.ok()) {
    std::remove(tmp.c_str());
    return status;
  }
  const std::string folder = std::filesystem::path(path).parent_path().string();
  return Sync(folder.empty() ? "." : folder, O_DIRECTORY);
}

absl::Status WriteStringAtomically(const std::string& path,
                                   absl::string_view bytes) {
  return WriteFileAtomically(path, [&](const std::string& tmp) -> absl::Status {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    out.close();
    if (!out) return absl::DataLossError(absl::StrCat("cannot write ", tmp));
    return absl::OkStatus();
  });
}

}  // namespace distill
