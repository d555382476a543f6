// The built-in decoupled KD loss. Conventions shared by every built-in are
// in losses/builtin_common.h.
//
//   dkd         T^2 * (alpha * TCKD + beta * NCKD), decoupled KD (Zhao et
//               al., CVPR 2022), y the label: TCKD = KL(b_p || b_q) of the
//               binary (target, rest) distributions b = (p_y, 1 - p_y);
//               NCKD = KL(p' || q') of the distributions over the non-target
//               classes renormalized, p'_c = p_c / (1 - p_y). Since
//               KL(p || q) = TCKD + (1 - p_y) NCKD, kd_kl is dkd with
//               alpha = 1, beta = 1 - p_y. Needs dense targets and labels.
#include <limits>
#include <memory>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "common/torch_status.h"
#include "losses/builtin_common.h"
#include "losses/loss.h"
#include "losses/registry.h"
#include "losses/teacher_targets.h"

namespace distill::losses {
namespace {

using internal::CheckLabels;
using internal::CheckStudent;
using internal::CheckTeacher;
using internal::FlatLogits;
using internal::kProbFloor;
using internal::MeanOverTargets;

class DkdLoss final : public Loss {
 public:
  DkdLoss(double alpha, double beta) : alpha_(alpha), beta_(beta) {}

  absl::StatusOr<torch::Tensor> Compute(
      const LossInputs& inputs) const override {
    DISTILL_RETURN_IF_ERROR(CheckStudent("dkd", inputs.student_logits));
    DISTILL_RETURN_IF_ERROR(CheckTeacher("dkd", inputs));
    if (inputs.teacher->form != TeacherTargets::Form::kDense) {
      return absl::FailedPreconditionError(
          absl::StrCat("dkd needs dense teacher targets, got ",
                       FormName(inputs.teacher->form)));
    }
    DISTILL_RETURN_IF_ERROR(CheckLabels("dkd", inputs));
    if (inputs.student_logits.size(-1) < 2) {
      return absl::InvalidArgumentError(
          "dkd needs at least 2 classes: NCKD is over the non-target ones");
    }
    return TorchCall("dkd", [&]() -> torch::Tensor {
      const double t = inputs.teacher->temperature;
      const torch::Tensor z = FlatLogits(inputs.student_logits) / t;
      const torch::Tensor p = inputs.teacher->probs.detach()
                                  .reshape({-1, z.size(-1)})
                                  .to(z.options().requires_grad(false));
      // Ignored positions use class 0; MeanOverTargets drops them.
      const torch::Tensor target = inputs.labels.reshape({-1, 1})
                                       .to(z.device(), torch::kLong)
                                       .clamp_min(0);
      const torch::Tensor is_target =
          torch::zeros_like(z, torch::kBool).scatter(-1, target, true);
      constexpr double kInf = std::numeric_limits<double>::infinity();
      // Student: log q_y and log(1 - q_y) = logsumexp over the non-target
      // logits - logsumexp(z), without the cancellation of 1 - q_y.
      const torch::Tensor lse = torch::logsumexp(z, -1, /*keepdim=*/true);
      const torch::Tensor z_rest = z.masked_fill(is_target, -kInf);
      const torch::Tensor log_q_y = z.gather(-1, target) - lse;
      const torch::Tensor log_q_rest =
          torch::logsumexp(z_rest, -1, /*keepdim=*/true) - lse;
      // Teacher: the non-target mass summed, not 1 - p_y, for the same
      // reason.
      const torch::Tensor p_y = p.gather(-1, target);
      const torch::Tensor p_rest =
          p.masked_fill(is_target, 0.0).sum(-1, /*keepdim=*/true);
      const torch::Tensor tckd =
          (torch::xlogy(p_y, p_y) - p_y * log_q_y +
           torch::xlogy(p_rest, p_rest) - p_rest * log_q_rest)
              .squeeze(-1);
      // Non-target distributions; a one-hot teacher has none (p' = 0).
      const torch::Tensor p_hat =
          p.masked_fill(is_target, 0.0) / p_rest.clamp_min(kProbFloor);
      const torch::Tensor log_q_hat =
          torch::log_softmax(z_rest, -1).masked_fill(is_target, 0.0);
      const torch::Tensor nckd =
          (torch::xlogy(p_hat, p_hat) - p_hat * log_q_hat).sum(-1);
      return MeanOverTargets(alpha_ * tckd + beta_ * nckd, inputs) * (t * t);
    });
  }

 private:
  double alpha_;
  double beta_;
};

LossEntry DkdEntry() {
  LossEntry entry;
  entry.name = "dkd";
  entry.description =
      "Decoupled KD: T^2 * (alpha * TCKD + beta * NCKD), Zhao et al. 2022; "
      "needs dense targets and labels.";
  entry.needs_teacher = true;
  entry.params.push_back(ParamSpec{
      "alpha", 1.0, 0.0, 1000.0,
      "Weight of the target-class term TCKD (binary KL of p_y vs q_y)."});
  entry.params.push_back(ParamSpec{
      "beta", 8.0, 0.0, 1000.0,
      "Weight of the non-target term NCKD (KL over the other classes, "
      "renormalized); the paper's default for CIFAR-100 is 8."});
  entry.factory = [](const LossParams& params) -> std::unique_ptr<Loss> {
    return std::make_unique<DkdLoss>(params.at("alpha"), params.at("beta"));
  };
  return entry;
}

}  // namespace

DISTILL_REGISTER_LOSS(dkd, DkdEntry());

}  // namespace distill::losses
