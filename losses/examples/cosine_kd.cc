// An example loss plugin: cosine distance between the teacher's and the
// student's temperature-softened distributions,
//
//   cosine_kd = mean over positions of 1 - p.q / max(|p| |q|, eps),
//   p = teacher probs at T, q = softmax(student / T).
//
// Dense teacher targets only. One declared parameter, `eps` (default 1e-8,
// in [0, 1]), guards the division as torch's cosine_similarity does. Build it
// as a MODULE library against the installed package (docs/PLUGINS.md) and
// load it with `distill --loss_plugin libcosine_kd.so`.
#include <memory>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "losses/plugin.h"

namespace {

using ::distill::losses::LossEntry;
using ::distill::losses::LossInputs;
using ::distill::losses::LossParams;
using ::distill::losses::LossRegistry;
using ::distill::losses::TeacherTargets;

class CosineKdLoss final : public distill::losses::Loss {
 public:
  explicit CosineKdLoss(double eps) : eps_(eps) {}

  absl::StatusOr<torch::Tensor> Compute(
      const LossInputs& inputs) const override {
    const TeacherTargets* teacher = inputs.teacher;
    if (teacher == nullptr) {
      return absl::FailedPreconditionError(
          "cosine_kd needs teacher targets but none were given");
    }
    if (teacher->form != TeacherTargets::Form::kDense) {
      return absl::FailedPreconditionError(
          "cosine_kd needs dense teacher targets, got sparse ones (top-k or "
          "sampled)");
    }
    const torch::Tensor& logits = inputs.student_logits;
    if (!logits.defined() || logits.dim() < 2 || !teacher->probs.defined() ||
        teacher->probs.sizes() != logits.sizes()) {
      return absl::InvalidArgumentError(
          "cosine_kd: teacher probabilities and student logits must have the "
          "same [N, C] or [N, S, V] shape");
    }
    // No exception may leave a plugin (STYLE rule 5): torch's are caught
    // here and returned as a Status.
    try {
      const int64_t classes = logits.size(-1);
      const torch::Tensor q =
          torch::softmax(logits.reshape({-1, classes}).to(torch::kFloat) /
                             teacher->temperature,
                         -1);
      const torch::Tensor p =
          teacher->probs.detach().reshape({-1, classes}).to(q.options());
      const torch::Tensor dot = (p * q).sum(-1);
      const torch::Tensor norms = p.norm(2, -1) * q.norm(2, -1);
      return (1.0 - dot / norms.clamp_min(eps_)).mean();
    } catch (const c10::Error& e) {
      return absl::InternalError(
          absl::StrCat("cosine_kd: ", e.what_without_backtrace()));
    }
  }

 private:
  double eps_;
};

absl::Status RegisterLosses(LossRegistry& registry) {
  LossEntry entry;
  entry.name = "cosine_kd";
  entry.description =
      "1 - cosine similarity of p_T and q_T (example plugin); dense targets.";
  entry.needs_teacher = true;
  entry.params = {{"eps", 1e-8, 0.0, 1.0,
                   "Floor of |p| |q| in the division, as torch's "
                   "cosine_similarity."}};
  entry.factory = [](const LossParams& params) {
    return std::make_unique<CosineKdLoss>(params.at("eps"));
  };
  return registry.Register(std::move(entry));
}

}  // namespace

DISTILL_LOSS_PLUGIN(RegisterLosses);
