// The loss interface. A loss maps student logits, optional teacher targets
// and hard labels to a scalar. Losses are created per job from the registry
// (losses/registry.h) and are immutable after creation: Compute is const and
// may be called from several threads.
#ifndef DISTILL_LOSSES_LOSS_H_
#define DISTILL_LOSSES_LOSS_H_

#include <torch/torch.h>

#include <cstdint>
#include <map>
#include <string>

#include "absl/status/statusor.h"
#include "losses/teacher_targets.h"

namespace distill::losses {

// Everything a loss may look at for one (micro-)batch.
struct LossInputs {
  // float [N, C] or [N, S, V]; requires grad during training.
  torch::Tensor student_logits;
  // Null when the job has no teacher (supervised training).
  const TeacherTargets* teacher = nullptr;
  // int64 [N] or [N, S].
  torch::Tensor labels;
  // For losses with schedules: the global step and epoch (0-based), and the
  // run's total number of optimizer steps (0 when unknown, e.g. in tests).
  int64_t step = 0;
  int64_t epoch = 0;
  int64_t total_steps = 0;
};

// Named numeric parameters of a loss, from the job config.
using LossParams = std::map<std::string, double>;

class Loss {
 public:
  virtual ~Loss() = default;
  // Returns a float scalar (mean over samples, or over positions for
  // [N, S, V]). FailedPrecondition when a teacher is needed and absent, or
  // the targets' form is one the loss cannot use; InvalidArgument on shape
  // mismatches.
  virtual absl::StatusOr<torch::Tensor> Compute(
      const LossInputs& inputs) const = 0;
};

}  // namespace distill::losses

#endif  // DISTILL_LOSSES_LOSS_H_
