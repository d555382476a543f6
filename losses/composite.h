// A weighted sum of loss terms, as a job's `loss` list configures it. Logs
// each term by name. Immutable after Create; Compute is thread-safe.
#ifndef DISTILL_LOSSES_COMPOSITE_H_
#define DISTILL_LOSSES_COMPOSITE_H_

#include <torch/torch.h>

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "losses/loss.h"
#include "losses/registry.h"
#include "losses/schedule.h"

namespace distill::losses {

struct TermSpec {
  std::string name;
  double weight = 1.0;
  LossParams params;
  // When set, replaces `weight`: evaluated at LossInputs::step of
  // LossInputs::total_steps on every Compute.
  std::optional<ValueSchedule> weight_schedule = std::nullopt;
};

// A language model's side of the loss for CompositeLoss::ComputeOverHead:
// its final hidden states and output head instead of logits.
struct HeadLossInputs {
  // float [N, S, H] and [V, H]; the student's logits are hidden @ head^T.
  torch::Tensor hidden;
  torch::Tensor head_weight;
  // Null when the job has no teacher; otherwise covering [N, S] and V.
  const TeacherTargets* teacher = nullptr;
  // int64 [N, S]; kIgnoreLabel where no token is predicted.
  torch::Tensor labels;
  int64_t step = 0;
  int64_t epoch = 0;
  int64_t total_steps = 0;
  // Token positions per chunk, >= 1. Default: 1024.
  int64_t chunk_tokens = 1024;
};

struct CompositeResult {
  torch::Tensor total;                  // scalar, differentiable
  std::map<std::string, double> terms;  // unweighted value of each term
};

class CompositeLoss {
 public:
  // Errors from the registry (unknown name, bad parameter), and
  // InvalidArgument for no terms, a negative or non-finite weight (or
  // schedule start or end), or a name listed twice.
  static absl::StatusOr<CompositeLoss> Create(
      const std::vector<TermSpec>& terms,
      const LossRegistry& registry = LossRegistry::Global());

  absl::StatusOr<CompositeResult> Compute(const LossInputs& inputs) const;

  // Compute() of logits = hidden @ head_weight^T without ever holding more
  // than chunk_tokens x V logits: each chunk of token positions is
  // projected, its loss terms computed (weighted by the chunk's share of
  // the positions not ignored, so each term stays a mean over all of them)
  // and its gradients with respect to its hidden states and the head taken
  // at once, as Liger-Kernel's fused linear losses do; the returned total's
  // backward hands those gradients on. Needs grad mode. Same errors as
  // Compute, and InvalidArgument for shapes that do not fit together.
  absl::StatusOr<CompositeResult> ComputeOverHead(
      const HeadLossInputs& inputs) const;
  // True when any term reads teacher targets.
  bool needs_teacher() const { return needs_teacher_; }
  std::vector<std::string> term_names() const;

 private:
  struct Term {
    std::string name;
    double weight;
    std::optional<ValueSchedule> weight_schedule;
    std::shared_ptr<const Loss> loss;
  };
  std::vector<Term> terms_;
  bool needs_teacher_ = false;
};

}  // namespace distill::losses

#endif  // DISTILL_LOSSES_COMPOSITE_H_
