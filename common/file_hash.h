// SHA-256 of a file: the identity a teacher server reports in Info (so that
// trainers key cached targets by the exact weights) and the tokenizer a
// token file was encoded with.
// Stateless; safe from any thread.
#ifndef DISTILL_COMMON_FILE_HASH_H_
#define DISTILL_COMMON_FILE_HASH_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace distill {

// Lower-case hex SHA-256 of the file's bytes (64 characters). NotFound when
// the file cannot be opened, DataLoss when reading it fails part way.
absl::StatusOr<std::string> FileSha256Hex(const std::string& path);

// Lower-case hex SHA-256 of the parts' bytes one after another (a teacher's
// output head: its weight's bytes, then its bias's). InternalError only when
// OpenSSL fails.
absl::StatusOr<std::string> Sha256Hex(
    absl::Span<const absl::string_view> parts);

}  // namespace distill

#endif  // DISTILL_COMMON_FILE_HASH_H_
