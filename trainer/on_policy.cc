#include "trainer/internal/on_policy.h"

#include <algorithm>
#include <chrono>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/labels.h"
#include "common/mix64.h"
#include "common/status.h"
#include "common/torch_status.h"

namespace distill::trainer {

OnPolicyOptions OnPolicyOptionsFor(const JobConfig& config, int rank) {
  const auto& o = config.on_policy();
  OnPolicyOptions options;
  options.fraction = o.fraction();
  options.prompt_tokens = o.prompt_tokens();
  options.new_tokens = o.new_tokens();
  options.sampling.temperature = o.temperature();
  options.sampling.top_p = o.top_p();
  options.sampling.stop_id = o.stop_id();
  options.overlap = o.overlap();
  options.student_top_k = o.student_top_k();
  options.seed = config.seed();
  options.rank = rank;
  return options;
}

absl::StatusOr<SampledWindows> SampleWindows(student::Model& model,
                                             const torch::Tensor& prompts,
                                             int64_t window_tokens,
                                             const OnPolicyOptions& options,
                                             uint64_t seed) {
  const int64_t room = window_tokens - prompts.size(1);
  student::GenerateOptions sampling = options.sampling;
  sampling.max_new_tokens =
      options.new_tokens > 0 ? std::min(options.new_tokens, room) : room;
  sampling.seed = seed;
  sampling.top_ids = options.student_top_k;
  DISTILL_ASSIGN_OR_RETURN(student::BatchSample sample,
                           student::GenerateBatch(model, prompts, sampling));
  if (sampling.max_new_tokens < room) {
    // Padding to the window's length: past each row's length, so no label
    // reads it (nor the ids asked at its positions).
    DISTILL_RETURN_IF_ERROR(TorchCall("padding on-policy windows", [&] {
      const int64_t n = prompts.size(0), pad = room - sampling.max_new_tokens;
      sample.tokens =
          torch::cat({sample.tokens, torch::zeros({n, pad}, torch::kLong)}, 1);
      if (sample.top_ids.defined()) {
        const int64_t k = sample.top_ids.size(2);
        sample.top_ids =
            torch::cat({sample.top_ids,
                        torch::arange(k, torch::kLong).expand({n, pad, k})},
                       1);
      }
    }));
  }
  return SampledWindows{std::move(sample.tokens), std::move(sample.lengths),
                        std::move(sample.top_ids)};
}

bool IsOnPolicyStep(uint64_t seed, double fraction, int64_t step) {
  if (fraction <= 0) return false;
  if (fraction >= 1) return true;
  const uint64_t h = Mix64(Mix64(seed) ^ static_cast<uint64_t>(step));
  // The top 53 bits as a double in [0, 1).
  const double u = static_cast<double>(h >> 11) * 0x1.0p-53;
  return u < fraction;
}

data::Batch SampledBatch(const torch::Tensor& ids, const SampledWindows& w,
                         int64_t prompt_tokens) {
  const int64_t s = w.tokens.size(1) - 1;
  data::Batch batch;
  batch.ids = ids;
  batch.inputs = w.tokens.narrow(1, 0, s).contiguous();
  torch::Tensor labels = w.tokens.narrow(1, 1, s).clone();
  // Label j predicts token j + 1: a prompt token when j + 1 < P, a token
  // after the row's stop id when j + 1 >= length.
  const torch::Tensor j = torch::arange(s, torch::kLong).unsqueeze(0);
  labels.masked_fill_(
      (j < prompt_tokens - 1) | (j >= w.lengths.unsqueeze(1) - 1),
      kIgnoreLabel);
  batch.labels = labels;
  if (w.top_ids.defined()) batch.teacher_indices = w.top_ids;
  return batch;
}

namespace {

// Whether a checkpoint's top ids are what this run would record: none
// without student_top_k, else int64 [n, s, k] ids.
bool RestoredIdsFit(const torch::Tensor& ids, int64_t n, int64_t s, int64_t k) {
  if (k == 0) return !ids.defined();
  return ids.defined() && ids.scalar_type() == torch::kLong &&
         ids.sizes() == torch::IntArrayRef({n, s, k});
}

}  // namespace

OnPolicySampler::OnPolicySampler(student::Model& model, OnPolicyOptions options)
    : model_(model), options_(std::move(options)) {}

absl::StatusOr<data::Batch> OnPolicySampler::Rewrite(data::Batch batch,
                                                     int64_t step) {
  if (!IsOnPolicy(step)) return batch;
  const int64_t p = options_.prompt_tokens;
  if (batch.inputs.dim() != 2 || batch.inputs.size(1) <= p) {
    return absl::InvalidArgumentError(
        absl::StrCat("on-policy steps need token windows longer than on_policy."
                     "prompt_tokens = ",
                     p));
  }
  const int64_t n = batch.inputs.size(0), s = batch.inputs.size(1);
  const torch::Tensor prompts = batch.inputs.narrow(1, 0, p);
  SampledWindows windows;
  // A checkpoint's windows are used only when they fit this batch whole.
  const SampledWindows& r = restored_;
  if (restored_step_ == step && r.tokens.defined() && r.lengths.defined() &&
      r.tokens.scalar_type() == torch::kLong &&
      r.lengths.scalar_type() == torch::kLong && r.tokens.dim() == 2 &&
      r.tokens.size(0) == n && r.tokens.size(1) == s + 1 &&
      r.lengths.dim() == 1 && r.lengths.size(0) == n &&
      torch::equal(r.tokens.narrow(1, 0, p), prompts) &&
      RestoredIdsFit(r.top_ids, n, s, options_.student_top_k)) {
    windows = std::move(restored_);
  } else {
    const auto start = std::chrono::steady_clock::now();
    DISTILL_ASSIGN_OR_RETURN(
        windows, SampleWindows(model_, prompts, s + 1, options_,
                               Mix64(Mix64(options_.seed ^
                                           Mix64(static_cast<uint64_t>(step))) +
                                     static_cast<uint64_t>(options_.rank))));
    generate_seconds_ +=
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
            .count();
  }
  restored_step_ = -1;
  restored_ = {};
  made_[step] = windows;
  data::Batch sampled;
  DISTILL_RETURN_IF_ERROR(TorchCall("an on-policy batch", [&] {
    sampled = SampledBatch(batch.ids, windows, p);
  }));
  return sampled;
}

SampledWindows OnPolicySampler::SampledFor(int64_t step) {
  made_.erase(made_.begin(), made_.lower_bound(step));
  const auto it = made_.find(step);
  return it == made_.end() ? SampledWindows{} : it->second;
}

void OnPolicySampler::Restore(int64_t step, SampledWindows windows) {
  restored_step_ = step;
  restored_ = std::move(windows);
}

double OnPolicySampler::TakeGenerateSeconds() {
  return std::exchange(generate_seconds_, 0.0);
}

}  // namespace distill::trainer
