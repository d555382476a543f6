#include "teacher_server/auth.h"

#include <openssl/crypto.h>

#include "absl/strings/match.h"
#include "absl/strings/string_view.h"

namespace distill::teacher {

absl::Status CheckBearerToken(
    const std::multimap<grpc::string_ref, grpc::string_ref>& metadata,
    const std::string& token) {
  if (token.empty()) return absl::OkStatus();
  auto it = metadata.find("authorization");
  if (it == metadata.end()) {
    return absl::UnauthenticatedError(
        "missing 'authorization: Bearer <token>' metadata");
  }
  const absl::string_view value(it->second.data(), it->second.size());
  constexpr absl::string_view kScheme = "Bearer ";
  if (!absl::StartsWith(value, kScheme)) {
    return absl::UnauthenticatedError(
        "authorization metadata must be 'Bearer <token>'");
  }
  const absl::string_view given = value.substr(kScheme.size());
  if (given.size() != token.size() ||
      CRYPTO_memcmp(given.data(), token.data(), token.size()) != 0) {
    return absl::UnauthenticatedError("invalid bearer token");
  }
  return absl::OkStatus();
}

}  // namespace distill::teacher
