// The built-in losses that compare the teacher's and the student's
// distributions bucket by bucket: kd_kl, reverse_kl, js, soft_ce and tvd.
// generalized_jsd. They accept dense teacher targets and the sparse top-k
// form. Conventions
// shared by every built-in are in losses/builtin_common.h; here:
// * Top-k teacher targets are compared "bucketed": the k listed classes are
//   k buckets and everything else one tail bucket, whose teacher mass is
//   tail_mass and whose student mass is 1 - sum_i q_i, computed in log space
//   as logsumexp(z over unlisted classes) - logsumexp(z). With k == C there
//   is no tail bucket and every bucketed loss equals its dense form.
// * Sampled teacher targets (ids drawn from p_T, frequency count / m) are
//   buckets without a tail: the frequencies already sum to 1. Only kd_kl
//   and soft_ce take them: their gradient, (q - p) / T per class, is linear
//   in p, so the sampled gradient's mean is the dense one. The others are
//   not linear in p and would be biased; they refuse sampled targets.
//
// The losses, in bucket terms (p teacher, q student, sums over buckets):
//   kd_kl       T^2 * sum p (log p - log q)          KL(p || q)
//   reverse_kl  T^2 * sum q (log q - log max(p, 1e-12))  KL(q || p)
//   js          T^2 * (KL(p || m) + KL(q || m)) / 2, m = (p + q) / 2
//   soft_ce     T^2 * -sum p log q
//   tvd         T^2 * sum |p - q| / 2             total variation distance
//   generalized_jsd  T^2 * (beta KL(p || m) + (1 - beta) KL(q || m)),
//               m = beta p + (1 - beta) q (GKD, Agarwal et al. 2024); its
//               ends are taken as the limits on-policy recipes mean by
//               them, as TRL's GKD trainer does: beta = 0 is kd_kl and
//               beta = 1 is reverse_kl, exactly.
#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <string>
#include <utility>

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

using internal::CheckStudent;
using internal::CheckTeacher;
using internal::FlatLogits;
using internal::kProbFloor;
using internal::MeanOverTargets;

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
  if (k == classes || teacher.form == TeacherTargets::Form::kSampled) {
    return {values, log_q_top};
  }
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

// kd_kl on dense targets per row, KL(p || softmax(z / T)), with its
// gradient written out, (softmax(z / T) * sum(p) - p) / T, instead of
// autograd's walk back through the sum, product, log-softmax and division:
// the language models' [chunk, V] rows make each of those a pass over
// megabytes. sum(p) keeps the gradient exact for rows that are not quite
// distributions (fp16 targets off the wire).
class DenseKlRows : public torch::autograd::Function<DenseKlRows> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx,
                               const torch::Tensor& z, const torch::Tensor& p,
                               double t) {
    const torch::Tensor log_q = torch::log_softmax(t == 1.0 ? z : z / t, -1);
    ctx->save_for_backward({log_q, p});
    ctx->saved_data["t"] = t;
    return (torch::xlogy(p, p) - p * log_q).sum(-1);
  }
  static torch::autograd::tensor_list backward(
      torch::autograd::AutogradContext* ctx,
      torch::autograd::tensor_list grad_out) {
    const auto saved = ctx->get_saved_variables();
    const torch::Tensor& p = saved[1];
    const torch::Tensor scale =
        grad_out[0].reshape({-1, 1}) / ctx->saved_data["t"].toDouble();
    torch::Tensor grad = saved[0].exp();
    grad.mul_(p.sum(-1, /*keepdim=*/true) * scale).addcmul_(p, scale, -1);
    return {grad, torch::Tensor(), torch::Tensor()};
  }
};

class BucketLoss final : public Loss {
 public:
  BucketLoss(std::string name, BucketTerm term)
      : name_(std::move(name)), term_(term) {}

  absl::StatusOr<torch::Tensor> Compute(
      const LossInputs& inputs) const override {
    DISTILL_RETURN_IF_ERROR(CheckStudent(name_, inputs.student_logits));
    DISTILL_RETURN_IF_ERROR(CheckTeacher(name_, inputs));
    if (inputs.teacher->form == TeacherTargets::Form::kSampled &&
        term_ != &KdKlTerm && term_ != &SoftCeTerm) {
      return absl::FailedPreconditionError(absl::StrCat(
          name_,
          " is not linear in the teacher's probabilities, so sampled "
          "teacher targets would bias it; use kd_kl or soft_ce with "
          "SAMPLED, or a DENSE/TOP_K encoding"));
    }
    return TorchCall(name_, [&]() -> torch::Tensor {
      const TeacherTargets& teacher = *inputs.teacher;
      const double t = teacher.temperature;
      if (term_ == &KdKlTerm && teacher.form == TeacherTargets::Form::kDense) {
        const torch::Tensor z = FlatLogits(inputs.student_logits);
        const torch::Tensor p = teacher.probs.detach()
                                    .reshape({-1, z.size(-1)})
                                    .to(z.options().requires_grad(false));
        return MeanOverTargets(DenseKlRows::apply(z, p, t), inputs) * (t * t);
      }
      const Buckets buckets = MakeBuckets(inputs.student_logits, teacher);
      return MeanOverTargets(term_(buckets.p, buckets.log_q).sum(-1), inputs) *
             (t * t);
    });
  }

 private:
  std::string name_;
  BucketTerm term_;
};

// beta KL(p || m) + (1 - beta) KL(q || m) per bucket, m = beta p + (1 -
// beta) q, for beta in (0, 1). log m is a logaddexp of finite log q, so it
// is finite where p = 0, and neither product meets 0 * inf.
torch::Tensor GeneralizedJsdTerm(const torch::Tensor& p,
                                 const torch::Tensor& log_q, double beta) {
  const torch::Tensor log_m = torch::logaddexp(torch::log(p) + std::log(beta),
                                               log_q + std::log1p(-beta));
  return beta * (torch::xlogy(p, p) - p * log_m) +
         (1 - beta) * torch::exp(log_q) * (log_q - log_m);
}

class GeneralizedJsdLoss final : public Loss {
 public:
  explicit GeneralizedJsdLoss(double beta)
      : beta_(beta),
        kl_("generalized_jsd", &KdKlTerm),
        reverse_("generalized_jsd", &ReverseKlTerm) {}

  absl::StatusOr<torch::Tensor> Compute(
      const LossInputs& inputs) const override {
    if (beta_ == 0) return kl_.Compute(inputs);
    if (beta_ == 1) return reverse_.Compute(inputs);
    DISTILL_RETURN_IF_ERROR(
        CheckStudent("generalized_jsd", inputs.student_logits));
    DISTILL_RETURN_IF_ERROR(CheckTeacher("generalized_jsd", inputs));
    if (inputs.teacher->form == TeacherTargets::Form::kSampled) {
      return absl::FailedPreconditionError(
          "generalized_jsd with beta > 0 is not linear in the teacher's "
          "probabilities, so sampled teacher targets would bias it; use "
          "beta = 0 or a DENSE/TOP_K/HIDDEN encoding");
    }
    return TorchCall("generalized_jsd", [&]() -> torch::Tensor {
      const double t = inputs.teacher->temperature;
      const Buckets buckets =
          MakeBuckets(inputs.student_logits, *inputs.teacher);
      return MeanOverTargets(
                 GeneralizedJsdTerm(buckets.p, buckets.log_q, beta_).sum(-1),
                 inputs) *
             (t * t);
    });
  }

 private:
  double beta_;
  BucketLoss kl_;
  BucketLoss reverse_;
};

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

LossEntry GeneralizedJsdEntry() {
  LossEntry entry;
  entry.name = "generalized_jsd";
  entry.description =
      "T^2 * (beta KL(p_T || m) + (1 - beta) KL(q_T || m)), m = beta p_T + "
      "(1 - beta) q_T (GKD); beta = 0 is kd_kl, beta = 1 is reverse_kl.";
  entry.needs_teacher = true;
  entry.params.push_back(ParamSpec{
      "beta", 0.5, 0.0, 1.0,
      "Weight of the teacher in the mixture: 0 forward KL (mean-seeking), "
      "1 reverse KL (mode-seeking), 0.5 the Jensen-Shannon divergence."});
  entry.factory = [](const LossParams& params) -> std::unique_ptr<Loss> {
    return std::make_unique<GeneralizedJsdLoss>(params.at("beta"));
  };
  return entry;
}

}  // namespace

DISTILL_REGISTER_LOSS(generalized_jsd, GeneralizedJsdEntry());
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
DISTILL_REGISTER_LOSS(
    tvd,
    BucketEntry("tvd", "T^2 * total variation distance sum |p_T - q_T| / 2.",
                &TvdTerm));

}  // namespace distill::losses
