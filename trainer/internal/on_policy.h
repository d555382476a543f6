// On-policy batches for the training loop (GKD, Agarwal et al. 2024): on a
// chosen share of the steps, the batch's token windows are replaced by the
// student's own continuations of their first tokens, and the loss is taken
// only where the student's samples are predicted. The loop asks for an
// on-policy batch when the prefetch stage reads the step's batch from the
// loader, before the teacher is asked for its targets, so with teacher
// servers and a prefetch depth of one the next batch is sampled while the
// teacher scores the current one. Not thread-safe: the loop's thread only.
#ifndef DISTILL_TRAINER_INTERNAL_ON_POLICY_H_
#define DISTILL_TRAINER_INTERNAL_ON_POLICY_H_

#include <torch/torch.h>

#include <cstdint>
#include <map>

#include "absl/status/statusor.h"
#include "data/dataset.h"
#include "student/generate.h"
#include "student/model.h"
#include "trainer/config.h"
#include "trainer/internal/checkpoint.h"

namespace distill::trainer {

struct OnPolicyOptions {
  // Share of the steps that are on-policy, in [0, 1].
  double fraction = 0;
  // Tokens of each window kept as the prompt, >= 1.
  int64_t prompt_tokens = 1;
  // Tokens sampled after it, at most the rest of the window; 0: the rest
  // of the window. Positions past them are padding (id 0) no label reads.
  int64_t new_tokens = 0;
  // Temperature, top_p and stop_id of the student's sampling; its
  // max_new_tokens and seed are set per batch.
  student::GenerateOptions sampling;
  // Sample the next batch while the teacher scores this one (the loop
  // prefetches one batch ahead instead of none).
  bool overlap = false;
  // Record the student's k most likely ids at every position of the
  // sampled windows and ask the teacher at them (data::Batch::
  // teacher_indices); 0: the teacher's usual targets.
  int64_t student_top_k = 0;
  // The job's seed, and this rank: a step's draws are a function of both.
  uint64_t seed = 0;
  int rank = 0;
};

// The options of `config`'s on_policy section (defaults applied) for
// `rank`.
OnPolicyOptions OnPolicyOptionsFor(const JobConfig& config, int rank);

// The student's windows of `window_tokens` (S + 1) tokens from `prompts`
// [N, P]: options.new_tokens sampled (0 or more than fit: the rest of the
// window) with options.sampling and `seed`, then padding (id 0) past each
// row's length; with options.student_top_k = k, also the student's top k
// ids at the S input positions (ids 0 .. k - 1 at padded ones).
// Generation's errors as they are.
absl::StatusOr<SampledWindows> SampleWindows(student::Model& model,
                                             const torch::Tensor& prompts,
                                             int64_t window_tokens,
                                             const OnPolicyOptions& options,
                                             uint64_t seed);

// True when 0-based global `step` is on-policy: a uniform number in [0, 1)
// hashed from (seed, step) is below `fraction`. The same on every rank and
// in a resumed run.
bool IsOnPolicyStep(uint64_t seed, double fraction, int64_t step);

class OnPolicySampler {
 public:
  // `model` (a zoo language model) must outlive this.
  OnPolicySampler(student::Model& model, OnPolicyOptions options);

  const OnPolicyOptions& options() const { return options_; }
  bool IsOnPolicy(int64_t step) const {
    return IsOnPolicyStep(options_.seed, options_.fraction, step);
  }

  // The batch of 0-based global `step`: `batch` itself when the step is
  // off-policy; otherwise its windows (inputs [N, S] and labels [N, S], the
  // next tokens) with everything after the first prompt_tokens sampled by
  // the student, and labels kIgnoreLabel where they predict a prompt token
  // or follow a row's stop id. Ids are kept. InvalidArgument for windows
  // not longer than the prompt; generation's errors as they are.
  absl::StatusOr<data::Batch> Rewrite(data::Batch batch, int64_t step);

  // The windows sampled for `step` when Rewrite made them already (ahead
  // of the step, with overlap); empty tensors otherwise. Forgets the
  // windows of earlier steps.
  SampledWindows SampledFor(int64_t step);
  // A resumed run's windows for `step`, sampled ahead before it stopped:
  // Rewrite uses them instead of sampling again when their prompts are the
  // batch's.
  void Restore(int64_t step, SampledWindows windows);

  // Seconds spent sampling since the previous call.
  double TakeGenerateSeconds();

 private:
  student::Model& model_;
  const OnPolicyOptions options_;
  std::map<int64_t, SampledWindows> made_;
  int64_t restored_step_ = -1;
  SampledWindows restored_;
  double generate_seconds_ = 0;
};

// The training batch of sampled windows `w` ([N, S + 1] tokens, lengths
// [N]) whose first `prompt_tokens` are the prompt: inputs w[:, :S], labels
// w[:, 1:] with kIgnoreLabel before position prompt_tokens - 1 and from
// position length - 1 on, and teacher_indices w.top_ids (when set).
data::Batch SampledBatch(const torch::Tensor& ids, const SampledWindows& w,
                         int64_t prompt_tokens);

}  // namespace distill::trainer

#endif  // DISTILL_TRAINER_INTERNAL_ON_POLICY_H_
