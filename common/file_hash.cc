// Streams bytes through OpenSSL's EVP digest interface.
#include "common/file_hash.h"

#include <openssl/evp.h>

#include <cstdio>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"

namespace distill {
namespace {

// One SHA-256 computation: Update any number of times, then Hex once.
class Sha256 {
 public:
  Sha256() : ctx_(EVP_MD_CTX_new(), &EVP_MD_CTX_free) {
    ok_ = ctx_ != nullptr &&
          EVP_DigestInit_ex(ctx_.get(), EVP_sha256(), nullptr) == 1;
  }
  void Update(const void* data, size_t n) {
    ok_ = ok_ && EVP_DigestUpdate(ctx_.get(), data, n) == 1;
  }
  absl::StatusOr<std::string> Hex() {
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int length = 0;
    if (!ok_ || EVP_DigestFinal_ex(ctx_.get(), digest, &length) != 1) {
      return absl::InternalError("SHA-256 failed in OpenSSL");
    }
    return absl::BytesToHexString(
        absl::string_view(reinterpret_cast<const char*>(digest), length));
  }

 private:
  std::unique_ptr<EVP_MD_CTX, void (*)(EVP_MD_CTX*)> ctx_;
  bool ok_ = false;
};

}  // namespace

absl::StatusOr<std::string> FileSha256Hex(const std::string& path) {
  std::unique_ptr<std::FILE, int (*)(std::FILE*)> file(
      std::fopen(path.c_str(), "rb"), &std::fclose);
  if (file == nullptr) {
    return absl::NotFoundError(absl::StrCat("cannot open ", path));
  }
  Sha256 sha;
  std::vector<unsigned char> buffer(1 << 20);
  size_t n = 0;
  while ((n = std::fread(buffer.data(), 1, buffer.size(), file.get())) > 0) {
    sha.Update(buffer.data(), n);
  }
  if (std::ferror(file.get())) {
    return absl::DataLossError(absl::StrCat("error reading ", path));
  }
  return sha.Hex();
}

absl::StatusOr<std::string> Sha256Hex(
    absl::Span<const absl::string_view> parts) {
  Sha256 sha;
  for (absl::string_view part : parts) sha.Update(part.data(), part.size());
  return sha.Hex();
}

}  // namespace distill
