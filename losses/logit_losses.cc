// The built-in losses computed on the student's logits directly: hard_ce
// against the labels and mse_logits against the teacher's logits recovered
// from its probabilities. Conventions shared by every built-in are in
// losses/builtin_common.h.
//
//   hard_ce     (1 - e) * -log q_y + e * mean_c(-log q_c), T = 1,
//               e = label_smoothing (as torch's cross_entropy).
//   mse_logits  mean over positions and classes of (s - mean_c s - (t - mean_c
//   t))^2
//               with t = T * log max(p, 1e-12) the teacher's logits up to a
//               per-row constant; needs dense targets.
#include <memory>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
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

class HardCeLoss final : public Loss {
 public:
  explicit HardCeLoss(double label_smoothing)
      : label_smoothing_(label_smoothing) {}

  absl::StatusOr<torch::Tensor> Compute(
      const LossInputs& inputs) const override {
    DISTILL_RETURN_IF_ERROR(CheckStudent("hard_ce", inputs.student_logits));
    DISTILL_RETURN_IF_ERROR(CheckLabels("hard_ce", inputs));
    return TorchCall("hard_ce", [&]() -> torch::Tensor {
      const torch::Tensor log_q =
          torch::log_softmax(FlatLogits(inputs.student_logits), -1);
      // Ignored positions gather class 0; MeanOverTargets drops them.
      const torch::Tensor labels = inputs.labels.reshape({-1, 1})
                                       .to(log_q.device(), torch::kLong)
                                       .clamp_min(0);
      torch::Tensor loss = -log_q.gather(-1, labels).squeeze(-1);
      if (label_smoothing_ > 0.0) {
        loss =
            (1.0 - label_smoothing_) * loss - label_smoothing_ * log_q.mean(-1);
      }
      return MeanOverTargets(loss, inputs);
    });
  }

 private:
  double label_smoothing_;
};

class MseLogitsLoss final : public Loss {
 public:
  absl::StatusOr<torch::Tensor> Compute(
      const LossInputs& inputs) const override {
    DISTILL_RETURN_IF_ERROR(CheckStudent("mse_logits", inputs.student_logits));
    DISTILL_RETURN_IF_ERROR(CheckTeacher("mse_logits", inputs));
    if (inputs.teacher->form != TeacherTargets::Form::kDense) {
      return absl::FailedPreconditionError(
          "mse_logits needs dense teacher targets, got top-k");
    }
    return TorchCall("mse_logits", [&]() -> torch::Tensor {
      const torch::Tensor s = FlatLogits(inputs.student_logits);
      const torch::Tensor p = inputs.teacher->probs.detach()
                                  .reshape({-1, s.size(-1)})
                                  .to(s.options().requires_grad(false));
      const torch::Tensor t =
          inputs.teacher->temperature * torch::log(p.clamp_min(kProbFloor));
      const torch::Tensor diff = (s - s.mean(-1, /*keepdim=*/true)) -
                                 (t - t.mean(-1, /*keepdim=*/true));
      return MeanOverTargets(diff.square().mean(-1), inputs);
    });
  }
};

LossEntry HardCeEntry() {
  LossEntry entry;
  entry.name = "hard_ce";
  entry.description =
      "Cross entropy of the student logits (T = 1) with the hard labels.";
  entry.needs_teacher = false;
  entry.params.push_back(
      ParamSpec{"label_smoothing", 0.0, 0.0, 0.999999,
                "Mass e spread uniformly over the classes: (1 - e) * CE + e * "
                "mean_c(-log q_c), as torch's cross_entropy."});
  entry.factory = [](const LossParams& params) -> std::unique_ptr<Loss> {
    return std::make_unique<HardCeLoss>(params.at("label_smoothing"));
  };
  return entry;
}

LossEntry MseLogitsEntry() {
  LossEntry entry;
  entry.name = "mse_logits";
  entry.description =
      "Mean squared error between row-centered student logits and the "
      "teacher's row-centered logits T * log p; needs dense targets.";
  entry.needs_teacher = true;
  entry.factory = [](const LossParams&) -> std::unique_ptr<Loss> {
    return std::make_unique<MseLogitsLoss>();
  };
  return entry;
}

}  // namespace

DISTILL_REGISTER_LOSS(hard_ce, HardCeEntry());
DISTILL_REGISTER_LOSS(mse_logits, MseLogitsEntry());

}  // namespace distill::losses
