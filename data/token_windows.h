// Language-model samples from a token file: sample i is the window of S + 1
// tokens starting at i * stride, split into inputs (the first S) and
// next-token labels (the last S). The last window may run past the end of
// the file: its missing inputs are 0 and its missing labels kIgnoreLabel, so
// every token of the split is predicted once (with stride = S). Immutable;
// thread-safe.
#ifndef DISTILL_DATA_TOKEN_WINDOWS_H_
#define DISTILL_DATA_TOKEN_WINDOWS_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "data/dataset.h"
#include "data/token_file.h"

namespace distill::data {

struct TokenWindowOptions {
  // Tokens per sample S, >= 1. Required.
  int64_t seq_len = 0;
  // Tokens between the starts of consecutive samples, >= 1; 0 means S
  // (windows that do not overlap). Default: 0.
  int64_t stride = 0;
  // Use only the first N windows; 0 uses all. Default: 0.
  int64_t limit = 0;
};

class TokenWindows final : public Dataset {
 public:
  // InvalidArgument when S or stride is not positive or the file holds
  // fewer than 2 tokens.
  static absl::StatusOr<std::unique_ptr<TokenWindows>> Create(
      std::shared_ptr<const TokenFile> file, const TokenWindowOptions& options);

  int64_t size() const override { return windows_; }
  int64_t num_classes() const override { return file_->info().vocab_size; }
  std::vector<int64_t> input_shape() const override { return {seq_len_}; }
  std::string name() const override;
  float background_value() const override { return 0.0f; }
  // inputs: int64 [N, S] token ids; labels: int64 [N, S].
  absl::StatusOr<Batch> Get(absl::Span<const int64_t> ids) const override;

  const TokenFile& file() const { return *file_; }
  // Labels that are not kIgnoreLabel, over the whole dataset.
  int64_t num_targets() const;

 private:
  TokenWindows() = default;

  std::shared_ptr<const TokenFile> file_;
  int64_t seq_len_ = 0;
  int64_t stride_ = 0;
  int64_t windows_ = 0;
};

}  // namespace distill::data

#endif  // DISTILL_DATA_TOKEN_WINDOWS_H_
