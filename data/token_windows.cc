#include "data/token_windows.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace distill::data {

absl::StatusOr<std::unique_ptr<TokenWindows>> TokenWindows::Create(
    std::shared_ptr<const TokenFile> file, const TokenWindowOptions& options) {
  if (options.seq_len < 1 || options.stride < 0 || options.limit < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "token windows need seq_len >= 1, stride >= 0 and limit >= 0, got ",
        options.seq_len, ", ", options.stride, ", ", options.limit));
  }
  if (file->size() < 2) {
    return absl::InvalidArgumentError(
        absl::StrCat("token file ", file->path(), " holds ", file->size(),
                     " tokens; a language-model sample needs at least 2"));
  }
  std::unique_ptr<TokenWindows> windows(new TokenWindows);
  windows->seq_len_ = options.seq_len;
  windows->stride_ = options.stride > 0 ? options.stride : options.seq_len;
  // Window i predicts tokens i * stride + 1 ...; every start with at least
  // one label left counts.
  windows->windows_ = (file->size() - 2) / windows->stride_ + 1;
  if (options.limit > 0) {
    windows->windows_ = std::min(windows->windows_, options.limit);
  }
  windows->file_ = std::move(file);
  return windows;
}

std::string TokenWindows::name() const {
  return absl::StrCat(TokenSplitName(file_->info().split), " tokens of ",
                      file_->path());
}

int64_t TokenWindows::num_targets() const {
  int64_t targets = 0;
  for (int64_t i = 0; i < windows_; ++i) {
    targets += std::min(seq_len_, file_->size() - 1 - i * stride_);
  }
  return targets;
}

absl::StatusOr<Batch> TokenWindows::Get(absl::Span<const int64_t> ids) const {
  const int64_t n = static_cast<int64_t>(ids.size());
  Batch batch;
  batch.ids = torch::empty({n}, torch::kLong);
  batch.inputs = torch::zeros({n, seq_len_}, torch::kLong);
  batch.labels = torch::full({n, seq_len_}, kIgnoreLabel, torch::kLong);
  int64_t* id_out = batch.ids.data_ptr<int64_t>();
  int64_t* in = batch.inputs.data_ptr<int64_t>();
  int64_t* out = batch.labels.data_ptr<int64_t>();
  const int64_t tokens = file_->size();
  for (int64_t row = 0; row < n; ++row) {
    const int64_t id = ids[row];
    if (id < 0 || id >= windows_) {
      return absl::OutOfRangeError(absl::StrCat(
          "window ", id, " is outside [0, ", windows_, ") of ", name()));
    }
    id_out[row] = id;
    const int64_t start = id * stride_;
    const int64_t len = std::min(seq_len_, tokens - 1 - start);
    for (int64_t j = 0; j < len; ++j) {
      in[row * seq_len_ + j] = file_->at(start + j);
      out[row * seq_len_ + j] = file_->at(start + j + 1);
    }
  }
  return batch;
}

}  // namespace distill::data
