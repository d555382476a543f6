// Input checks and helpers shared by the built-in losses (bucket_losses.cc,
// logit_losses.cc, dkd_loss.cc); not part of the plugin API. Conventions
// shared by every built-in:
// * Student logits are [N, C] or [N, S, V]; every leading dimension is
//   flattened, so a loss is the mean over all N (or N*S) positions. Labels
//   and teacher targets must cover exactly the student's leading shape.
// * T is the teacher targets' temperature; q = softmax(student / T) is always
//   handled as log q = log_softmax(student / T), so logits of +-1e4 stay
//   finite. hard_ce and nothing else uses T = 1.
// * Losses against the teacher are multiplied by T^2 (Hinton et al.), so
//   their gradients keep their size when T changes.
// * Top-k teacher targets are compared bucketed (bucket_losses.cc).
// * 0 * log 0 = 0 (torch::xlogy). Where a divergence divides by the
//   teacher's probability (reverse_kl, and mse_logits' recovered logits) p
//   is floored at kProbFloor = 1e-12 inside the log, since p may be 0.
// * Labels equal to kIgnoreLabel (-100, common/labels.h) mark positions no
//   loss counts: every built-in averages over the other positions only
//   (MeanOverTargets), and a batch with none gives 0.
// * Half and bfloat16 logits are computed in float32; float64 stays float64.
//
// Every function here is a pure function of its arguments; thread-safe.
#ifndef DISTILL_LOSSES_BUILTIN_COMMON_H_
#define DISTILL_LOSSES_BUILTIN_COMMON_H_

#include <torch/torch.h>

#include <string>

#include "absl/status/status.h"
#include "losses/loss.h"

namespace distill::losses::internal {

// Floor of a teacher probability inside a log (reverse_kl, mse_logits, dkd).
inline constexpr double kProbFloor = 1e-12;

// "[2, 3]".
std::string ShapeString(torch::IntArrayRef shape);

// Every dimension of the logits but the last (classes).
torch::IntArrayRef LeadingShape(const torch::Tensor& logits);

// Student logits are a non-empty floating-point [N, C] or [N, S, V] tensor.
// Messages start with `loss`.
absl::Status CheckStudent(const std::string& loss, const torch::Tensor& logits);

// inputs.teacher is present, has a finite T > 0 and, dense or top-k, covers
// exactly the student's leading shape and classes. Call after CheckStudent.
absl::Status CheckTeacher(const std::string& loss, const LossInputs& inputs);

// inputs.labels are integers over the student's leading shape, each a valid
// class or kIgnoreLabel. Call after CheckStudent.
absl::Status CheckLabels(const std::string& loss, const LossInputs& inputs);

// The mean of per-position values `per_row` [M] over the positions whose
// label is not kIgnoreLabel; the plain mean when inputs.labels are absent or
// do not cover the M positions (losses that read no labels, in tests).
torch::Tensor MeanOverTargets(const torch::Tensor& per_row,
                              const LossInputs& inputs);

// Student logits as [M, C] in the dtype the loss is computed in.
torch::Tensor FlatLogits(const torch::Tensor& logits);

}  // namespace distill::losses::internal

#endif  // DISTILL_LOSSES_BUILTIN_COMMON_H_
