// The built-in losses. Conventions shared by all of them:
//
// * Student logits are [N, C] or [N, S, V]; every leading dimension is
//   flattened, so a loss is the mean over all N (or N*S) positions. Labels
//   and teacher targets must cover exactly the student's leading shape.
// * T is the teacher targets' temperature; q = softmax(student / T) is always
//   handled as log q = log_softmax(student / T), so logits of +-1e4 stay
//   finite. hard_ce and nothing else uses T = 1.
// * Losses against the teacher are multiplied by T^2 (Hinton et al.), so
//   their gradients keep their size when T changes.
// * Top-k teacher targets are compared "bucketed": the k listed classes are
//   k buckets and everything else one tail bucket, whose teacher mass is
//   tail_mass and whose student mass is 1 - sum_i q_i, computed in log space
//   as logsumexp(z over unlisted classes) - logsumexp(z). With k == C there
//   is no tail bucket and every bucketed loss equals its dense form.
// * 0 * log 0 = 0 (torch::xlogy). Where a divergence divides by the
//   teacher's probability (reverse_kl, and mse_logits' recovered logits) p
//   is floored at kProbFloor = 1e-12 inside the log, since p may be 0.
// * Half and bfloat16 logits are computed in float32; float64 stays float64.
//
// The losses, in bucket terms (p teacher, q student, sums over buckets):
//   hard_ce     (1 - e) * -log q_y + e * mean_c(-log q_c), T = 1,
//               e = label_smoothing (as torch's cross_entropy).
//   kd_kl       T^2 * sum p (log p - log q)          KL(p || q)
//   reverse_kl  T^2 * sum q (log q - log max(p, 1e-12))  KL(q || p)
//   js          T^2 * (KL(p || m) + KL(q || m)) / 2, m = (p + q) / 2
//   soft_ce     T^2 * -sum p log q
//   tvd         T^2 * sum |p - q| / 2             total variation distance
//   mse_logits  mean over all elements of (s - mean_c s - (t - mean_c t))^2
//               with t = T * log max(p, 1e-12) the teacher's logits up to a
//               per-row constant; needs dense targets.
//   dkd         T^2 * (alpha * TCKD + beta * NCKD), decoupled KD (Zhao et
//               al., CVPR 2022), y the label: TCKD = KL(b_p || b_q) of the
//               binary (target, rest) distributions b = (p_y, 1 - p_y);
//               NCKD = KL(p' || q') of the distributions over the non-target
//               classes renormalized, p'_c = p_c / (1 - p_y). Since
//               KL(p || q) = TCKD + (1 - p_y) NCKD, kd_kl is dkd with
//               alpha = 1, beta = 1 - p_y. Needs dense targets and labels.
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status.h"
#include "common/torch_status.h"
#include "losses/loss.h"
#include "losses/registry.h"
#include "losses/teacher_targets.h"

namespace distill::losses {
namespace {

constexpr double kProbFloor = 1e-12;

std::string ShapeString(torch::IntArrayRef shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

torch::IntArrayRef LeadingShape(const torch::Tensor& logits) {
  return logits.sizes().slice(0, logits.dim() - 1);
}

absl::Status CheckStudent(const std::string& loss,
                          const torch::Tensor& logits) {
  if (!logits.defined()) {
    return absl::InvalidArgumentError(
        absl::StrCat(loss, ": student logits are missing"));
  }
  if (logits.dim() < 2 || logits.dim() > 3 || logits.numel() == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(loss, ": student logits must be a non-empty [N, C] or ",
                     "[N, S, V] tensor, got ", ShapeString(logits.sizes())));
  }
  if (!logits.is_floating_point()) {
    return absl::InvalidArgumentError(
        absl::StrCat(loss, ": student logits must be floating point, got ",
                     c10::toString(logits.scalar_type())));
  }
  return absl::OkStatus();
}

absl::Status CheckTeacher(const std::string& loss, const LossInputs& inputs) {
  const TeacherTargets* teacher = inputs.teacher;
  if (teacher == nullptr) {
    return absl::FailedPreconditionError(
        absl::StrCat(loss, " needs teacher targets but none were given"));
  }
  if (!(teacher->temperature > 0.0) || !std::isfinite(teacher->temperature)) {
    return absl::InvalidArgumentError(
        absl::StrCat(loss, ": teacher temperature must be finite and > 0, got ",
                     teacher->temperature));
  }
  const torch::Tensor& student = inputs.student_logits;
  const int64_t classes = student.size(-1);
  if (teacher->num_classes != classes) {
    return absl::InvalidArgumentError(
        absl::StrCat(loss, ": teacher targets have ", teacher->num_classes,
                     " classes but student logits ",
                     ShapeString(student.sizes()), " have ", classes));
  }
  const bool dense = teacher->form == TeacherTargets::Form::kDense;
  const torch::Tensor& main = dense ? teacher->probs : teacher->values;
  if (!main.defined() || (!dense && (!teacher->indices.defined() ||
                                     !teacher->tail_mass.defined()))) {
    return absl::InvalidArgumentError(
        absl::StrCat(loss, ": ", dense ? "dense" : "top-k",
                     " teacher targets are missing a tensor"));
  }
  if (main.dim() != student.dim()) {
    return absl::InvalidArgumentError(absl::StrCat(
        loss, ": teacher targets ", ShapeString(main.sizes()),
        " do not match student logits ", ShapeString(student.sizes())));
  }
  if (teacher->batch_shape() != LeadingShape(student)) {
    return absl::InvalidArgumentError(
        absl::StrCat(loss, ": teacher targets cover batch shape ",
                     ShapeString(teacher->batch_shape()),
                     " but student logits are ", ShapeString(student.sizes())));
  }
  if (dense) {
    if (main.size(-1) != classes) {
      return absl::InvalidArgumentError(absl::StrCat(
          loss, ": teacher probabilities ", ShapeString(main.sizes()),
          " do not match student logits ", ShapeString(student.sizes())));
    }
  } else {
    const int64_t k = main.size(-1);
    if (k < 1 || k > classes || teacher->indices.sizes() != main.sizes() ||
        teacher->tail_mass.sizes() != LeadingShape(main)) {
      return absl::InvalidArgumentError(absl::StrCat(
          loss, ": top-k teacher targets with values ",
          ShapeString(main.sizes()), ", indices ",
          ShapeString(teacher->indices.sizes()), " and tail ",
          ShapeString(teacher->tail_mass.sizes()),
          " do not fit student logits ", ShapeString(student.sizes())));
    }
  }
  return absl::OkStatus();
}

absl::Status CheckLabels(const std::string& loss, const LossInputs& inputs) {
  const torch::Tensor& labels = inputs.labels;
  const torch::Tensor& student = inputs.student_logits;
  if (!labels.defined()) {
    return absl::InvalidArgumentError(
        absl::StrCat(loss, " needs labels but none were given"));
  }
  if (labels.sizes() != LeadingShape(student)) {
    return absl::InvalidArgumentError(absl::StrCat(
        loss, ": labels ", ShapeString(labels.sizes()),
        " do not match student logits ", ShapeString(student.sizes())));
  }
  if (labels.is_floating_point() || labels.is_complex() ||
      labels.scalar_type() == torch::kBool) {
    return absl::InvalidArgumentError(
        absl::StrCat(loss, ": labels must be integers, got ",
                     c10::toString(labels.scalar_type())));
  }
  return TorchCall(
      absl::StrCat(loss, ": checking labels"), [&]() -> absl::Status {
        const int64_t lo = labels.min().item<int64_t>();
        const int64_t hi = labels.max().item<int64_t>();
        if (lo < 0 || hi >= student.size(-1)) {
          return absl::InvalidArgumentError(absl::StrCat(
              loss, ": labels span [", lo, ", ", hi, "] but student logits ",
              ShapeString(student.sizes()), " have ", student.size(-1),
              " classes"));
        }
        return absl::OkStatus();
      });
}

// Student logits as [M, C] in the dtype the loss is computed in.
torch::Tensor FlatLogits(const torch::Tensor& logits) {
  const torch::Tensor flat = logits.reshape({-1, logits.size(-1)});
  if (flat.scalar_type() == torch::kDouble) return flat;
  return flat.to(torch::kFloat);
}

// Teacher and student distributions over the same buckets, [M, B].
struct Buckets {
  torch::Tensor p;      // teacher probabilities (no gradient)
  torch::Tensor log_q;  // student log-probabilities at temperature T
};

Buckets MakeBuckets(const torch::Tensor& student,
                    const TeacherTargets& teacher) {
  const torch::Tensor z = FlatLogits(student) / teacher.temperature;
  const int64_t classes = z.size(-1);
  const auto options = z.options().requires_grad(false);
  const torch::Tensor log_q = torch::log_softmax(z, -1);
  if (teacher.form == TeacherTargets::Form::kDense) {
    return {teacher.probs.detach().reshape({-1, classes}).to(options), log_q};
  }
  const int64_t k = teacher.values.size(-1);
  const torch::Tensor values =
      teacher.values.detach().reshape({-1, k}).to(options);
  const torch::Tensor indices =
      teacher.indices.reshape({-1, k}).to(z.device(), torch::kLong);
  const torch::Tensor log_q_top = log_q.gather(-1, indices);
  if (k == classes) return {values, log_q_top};
  // log(1 - sum_i q_i) without cancellation: the log-mass of the unlisted
  // classes. At least one class is unlisted, so the logsumexp is finite.
  const torch::Tensor listed =
      torch::zeros_like(z, torch::kBool).scatter(-1, indices, true);
  const torch::Tensor log_q_tail =
      torch::logsumexp(
          z.masked_fill(listed, -std::numeric_limits<double>::infinity()), -1,
          /*keepdim=*/true) -
      torch::logsumexp(z, -1, /*keepdim=*/true);
  const torch::Tensor tail =
      teacher.tail_mass.detach().reshape({-1, 1}).to(options);
  return {torch::cat({values, tail}, -1),
          torch::cat({log_q_top, log_q_tail}, -1)};
}

// Per-bucket contribution of a teacher loss, summed over buckets afterwards.
using BucketTerm = torch::Tensor (*)(const torch::Tensor& p,
                                     const torch::Tensor& log_q);

torch::Tensor KdKlTerm(const torch::Tensor& p, const torch::Tensor& log_q) {
  return torch::xlogy(p, p) - p * log_q;
}

torch::Tensor ReverseKlTerm(const torch::Tensor& p,
                            const torch::Tensor& log_q) {
  return torch::exp(log_q) * (log_q - torch::log(p.clamp_min(kProbFloor)));
}

torch::Tensor JsTerm(const torch::Tensor& p, const torch::Tensor& log_q) {
  // log m = logaddexp(log p, log q) - log 2 is finite because log q is, even
  // where p = 0 (log p = -inf), so neither product below meets 0 * inf.
  const torch::Tensor log_m =
      torch::logaddexp(torch::log(p), log_q) - std::log(2.0);
  return 0.5 * (torch::xlogy(p, p) - p * log_m) +
         0.5 * torch::exp(log_q) * (log_q - log_m);
}

torch::Tensor TvdTerm(const torch::Tensor& p, const torch::Tensor& log_q) {
  return 0.5 * (p - torch::exp(log_q)).abs();
}

torch::Tensor SoftCeTerm(const torch::Tensor& p, const torch::Tensor& log_q) {
  return -p * log_q;
}

class BucketLoss final : public Loss {
 public:
  BucketLoss(std::string name, BucketTerm term)
      : name_(std::move(name)), term_(term) {}

  absl::StatusOr<torch::Tensor> Compute(
      const LossInputs& inputs) const override {
    DISTILL_RETURN_IF_ERROR(CheckStudent(name_, inputs.student_logits));
    DISTILL_RETURN_IF_ERROR(CheckTeacher(name_, inputs));
    return TorchCall(name_, [&]() -> torch::Tensor {
      const Buckets buckets =
          MakeBuckets(inputs.student_logits, *inputs.teacher);
      const double t = inputs.teacher->temperature;
      return term_(buckets.p, buckets.log_q).sum(-1).mean() * (t * t);
    });
  }

 private:
  std::string name_;
  BucketTerm term_;
};

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
      const torch::Tensor labels =
          inputs.labels.reshape({-1, 1}).to(log_q.device(), torch::kLong);
      torch::Tensor loss = -log_q.gather(-1, labels).squeeze(-1);
      if (label_smoothing_ > 0.0) {
        loss =
            (1.0 - label_smoothing_) * loss - label_smoothing_ * log_q.mean(-1);
      }
      return loss.mean();
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
      return diff.square().mean();
    });
  }
};

class DkdLoss final : public Loss {
 public:
  DkdLoss(double alpha, double beta) : alpha_(alpha), beta_(beta) {}

  absl::StatusOr<torch::Tensor> Compute(
      const LossInputs& inputs) const override {
    DISTILL_RETURN_IF_ERROR(CheckStudent("dkd", inputs.student_logits));
    DISTILL_RETURN_IF_ERROR(CheckTeacher("dkd", inputs));
    if (inputs.teacher->form != TeacherTargets::Form::kDense) {
      return absl::FailedPreconditionError(
          "dkd needs dense teacher targets, got top-k");
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
      const torch::Tensor target =
          inputs.labels.reshape({-1, 1}).to(z.device(), torch::kLong);
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
          (torch::xlogy(p_y, p_y) - p_y * log_q_y + torch::xlogy(p_rest, p_rest) -
           p_rest * log_q_rest)
              .squeeze(-1);
      // Non-target distributions; a one-hot teacher has none (p' = 0).
      const torch::Tensor p_hat =
          p.masked_fill(is_target, 0.0) / p_rest.clamp_min(kProbFloor);
      const torch::Tensor log_q_hat =
          torch::log_softmax(z_rest, -1).masked_fill(is_target, 0.0);
      const torch::Tensor nckd =
          (torch::xlogy(p_hat, p_hat) - p_hat * log_q_hat).sum(-1);
      return (alpha_ * tckd + beta_ * nckd).mean() * (t * t);
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

LossEntry BucketEntry(std::string name, std::string description,
                      BucketTerm term) {
  LossEntry entry;
  entry.name = name;
  entry.description = std::move(description);
  entry.needs_teacher = true;
  entry.factory = [name, term](const LossParams&) -> std::unique_ptr<Loss> {
    return std::make_unique<BucketLoss>(name, term);
  };
  return entry;
}

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
DISTILL_REGISTER_LOSS(kd_kl, BucketEntry("kd_kl",
                                         "T^2 * KL(p_T || q_T), Hinton et al.",
                                         &KdKlTerm));
DISTILL_REGISTER_LOSS(
    reverse_kl,
    BucketEntry("reverse_kl",
                "T^2 * KL(q_T || p_T), mode-seeking; p floored at 1e-12.",
                &ReverseKlTerm));
DISTILL_REGISTER_LOSS(
    js, BucketEntry("js", "T^2 * Jensen-Shannon divergence of p_T and q_T.",
                    &JsTerm));
DISTILL_REGISTER_LOSS(soft_ce,
                      BucketEntry("soft_ce",
                                  "T^2 * cross entropy -sum p_T log q_T.",
                                  &SoftCeTerm));
DISTILL_REGISTER_LOSS(mse_logits, MseLogitsEntry());
DISTILL_REGISTER_LOSS(
    tvd, BucketEntry("tvd",
                     "T^2 * total variation distance sum |p_T - q_T| / 2.",
                     &TvdTerm));
DISTILL_REGISTER_LOSS(dkd, DkdEntry());

}  // namespace distill::losses
