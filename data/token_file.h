// Token-id files: a tokenized split, written once by `distill_prepare_text`
// and memory-mapped by every reader. Layout, all little-endian:
//   bytes  0..7   magic "DTOKENS1"
//          8..11  uint32 header size (64)
//         12..15  uint32 bytes per token (2 when vocab_size <= 65,536, else 4)
//         16..19  uint32 vocab_size
//         20..23  uint32 split (0 train, 1 validation, 2 test)
//         24..31  uint64 token count
//         32..63  SHA-256 of the tokenizer model the ids came from
//   then the ids, uint16 or uint32 each.
// A TokenFile is immutable once opened; its methods are thread-safe.
#ifndef DISTILL_DATA_TOKEN_FILE_H_
#define DISTILL_DATA_TOKEN_FILE_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace distill::data {

enum class TokenSplit : uint32_t { kTrain = 0, kValid = 1, kTest = 2 };

// "train", "validation", "test".
std::string TokenSplitName(TokenSplit split);

struct TokenFileInfo {
  int64_t vocab_size = 0;
  TokenSplit split = TokenSplit::kTrain;
  // Lower-case hex, 64 characters.
  std::string tokenizer_sha256;
};

// Writes `ids` atomically. InvalidArgument when an id is >= vocab_size (naming
// its position) or the info is malformed.
absl::Status WriteTokenFile(const std::string& path, const TokenFileInfo& info,
                            absl::Span<const uint32_t> ids);

class TokenFile {
 public:
  // Maps `path` and checks it: NotFound when it cannot be opened;
  // DataLoss when the header is not a token file's, the file is shorter or
  // longer than its header says, or an id is >= the vocabulary size (each
  // message names the file and the numbers that disagree).
  static absl::StatusOr<std::unique_ptr<TokenFile>> Open(
      const std::string& path);
  ~TokenFile();
  TokenFile(const TokenFile&) = delete;
  TokenFile& operator=(const TokenFile&) = delete;

  const TokenFileInfo& info() const { return info_; }
  int64_t size() const { return size_; }
  const std::string& path() const { return path_; }
  // The id at `position` in [0, size()).
  uint32_t at(int64_t position) const;

 private:
  TokenFile() = default;

  std::string path_;
  TokenFileInfo info_;
  int64_t size_ = 0;
  int bytes_per_token_ = 2;
  const unsigned char* ids_ = nullptr;
  void* map_ = nullptr;
  size_t map_bytes_ = 0;
};

}  // namespace distill::data

#endif  // DISTILL_DATA_TOKEN_FILE_H_
