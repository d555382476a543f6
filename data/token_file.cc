#include "data/token_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <string>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "common/file.h"

namespace distill::data {
namespace {

constexpr char kMagic[8] = {'D', 'T', 'O', 'K', 'E', 'N', 'S', '1'};
constexpr int64_t kHeaderBytes = 64;

void PutU32(unsigned char* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<unsigned char>(v >> (8 * i));
}
void PutU64(unsigned char* p, uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = static_cast<unsigned char>(v >> (8 * i));
}
uint32_t GetU32(const unsigned char* p) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}
uint64_t GetU64(const unsigned char* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

int BytesPerToken(int64_t vocab_size) { return vocab_size <= 65536 ? 2 : 4; }

}  // namespace

std::string TokenSplitName(TokenSplit split) {
  switch (split) {
    case TokenSplit::kTrain:
      return "train";
    case TokenSplit::kValid:
      return "validation";
    case TokenSplit::kTest:
      return "test";
  }
  return "unknown";
}

absl::Status WriteTokenFile(const std::string& path, const TokenFileInfo& info,
                            absl::Span<const uint32_t> ids) {
  const bool hex =
      info.tokenizer_sha256.size() == 64 &&
      std::all_of(info.tokenizer_sha256.begin(), info.tokenizer_sha256.end(),
                  [](char c) {
                    return absl::ascii_isxdigit(static_cast<unsigned char>(c));
                  });
  if (info.vocab_size < 1 || info.vocab_size > UINT32_MAX || !hex) {
    return absl::InvalidArgumentError(
        absl::StrCat("token file ", path, ": vocab_size ", info.vocab_size,
                     " and a 64-digit hex tokenizer SHA-256 are required"));
  }
  const int width = BytesPerToken(info.vocab_size);
  std::string bytes(kHeaderBytes + width * ids.size(), '\0');
  auto* p = reinterpret_cast<unsigned char*>(bytes.data());
  std::memcpy(p, kMagic, 8);
  PutU32(p + 8, kHeaderBytes);
  PutU32(p + 12, width);
  PutU32(p + 16, static_cast<uint32_t>(info.vocab_size));
  PutU32(p + 20, static_cast<uint32_t>(info.split));
  PutU64(p + 24, ids.size());
  std::memcpy(p + 32, absl::HexStringToBytes(info.tokenizer_sha256).data(), 32);
  for (size_t i = 0; i < ids.size(); ++i) {
    if (ids[i] >= info.vocab_size) {
      return absl::InvalidArgumentError(
          absl::StrCat("token file ", path, ": id ", ids[i], " at position ", i,
                       " is not below the vocabulary size ", info.vocab_size));
    }
    unsigned char* out = p + kHeaderBytes + width * i;
    for (int b = 0; b < width; ++b) {
      out[b] = static_cast<unsigned char>(ids[i] >> (8 * b));
    }
  }
  return WriteStringAtomically(path, bytes);
}

absl::StatusOr<std::unique_ptr<TokenFile>> TokenFile::Open(
    const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    return absl::NotFoundError(absl::StrCat("cannot open token file ", path,
                                            ": ", std::strerror(errno)));
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    ::close(fd);
    return absl::NotFoundError(absl::StrCat("cannot stat token file ", path));
  }
  const int64_t file_bytes = st.st_size;
  if (file_bytes < kHeaderBytes) {
    ::close(fd);
    return absl::DataLossError(absl::StrCat(
        "token file ", path, " is ", file_bytes,
        " bytes, shorter than its 64-byte header (truncated or not a token "
        "file)"));
  }
  void* map = ::mmap(nullptr, file_bytes, PROT_READ, MAP_SHARED, fd, 0);
  ::close(fd);
  if (map == MAP_FAILED) {
    return absl::DataLossError(absl::StrCat("cannot map token file ", path,
                                            ": ", std::strerror(errno)));
  }
  std::unique_ptr<TokenFile> file(new TokenFile);
  file->path_ = path;
  file->map_ = map;
  file->map_bytes_ = file_bytes;
  const auto* p = static_cast<const unsigned char*>(map);
  const uint32_t header = GetU32(p + 8);
  const uint32_t width = GetU32(p + 12);
  const uint32_t vocab = GetU32(p + 16);
  const uint32_t split = GetU32(p + 20);
  const uint64_t count = GetU64(p + 24);
  if (std::memcmp(p, kMagic, 8) != 0 || header != kHeaderBytes) {
    return absl::DataLossError(
        absl::StrCat(path, " is not a token file (bad magic or header size)"));
  }
  if (vocab < 1 || width != static_cast<uint32_t>(BytesPerToken(vocab)) ||
      split > 2) {
    return absl::DataLossError(absl::StrCat(
        "token file ", path, " has a malformed header: vocab_size ", vocab,
        ", ", width, " bytes per token, split ", split));
  }
  const uint64_t payload = static_cast<uint64_t>(file_bytes - kHeaderBytes);
  if (count > payload / width || count * width != payload) {
    return absl::DataLossError(absl::StrCat(
        "token file ", path, " header says ", count, " tokens (", kHeaderBytes,
        " + ", count, " x ", width, " bytes) but the file has ", file_bytes,
        " bytes", count * width > payload ? " (truncated)" : ""));
  }
  file->info_.vocab_size = vocab;
  file->info_.split = static_cast<TokenSplit>(split);
  file->info_.tokenizer_sha256 = absl::BytesToHexString(
      absl::string_view(reinterpret_cast<const char*>(p + 32), 32));
  file->size_ = static_cast<int64_t>(count);
  file->bytes_per_token_ = static_cast<int>(width);
  file->ids_ = p + kHeaderBytes;
  for (int64_t i = 0; i < file->size_; ++i) {
    if (file->at(i) >= vocab) {
      return absl::DataLossError(absl::StrCat(
          "token file ", path, ": id ", file->at(i), " at position ", i,
          " is not below its vocabulary size ", vocab));
    }
  }
  return file;
}

TokenFile::~TokenFile() {
  if (map_ != nullptr) ::munmap(map_, map_bytes_);
}

uint32_t TokenFile::at(int64_t position) const {
  const unsigned char* p = ids_ + bytes_per_token_ * position;
  return bytes_per_token_ == 2 ? static_cast<uint32_t>(p[0] | (p[1] << 8))
                               : GetU32(p);
}

}  // namespace distill::data
