// CompositeLoss::ComputeOverHead: the loss of a language model's output
// head in chunks of token positions. Peak memory holds one chunk's logits,
// their log-softmax and gradient (3 x chunk x V floats) instead of three
// [N*S, V] tensors.
#include <torch/torch.h>

#include <algorithm>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/labels.h"
#include "common/linear.h"
#include "common/status.h"
#include "common/torch_status.h"
#include "losses/builtin_common.h"
#include "losses/composite.h"

namespace distill::losses {
namespace {

using internal::ShapeString;

// Attaches gradients computed ahead of time to the graph: the output is
// `total`, and its backward gives grad_out x (grad_hidden, grad_weight).
class PrecomputedGrad : public torch::autograd::Function<PrecomputedGrad> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx,
                               const torch::Tensor& hidden,
                               const torch::Tensor& weight,
                               const torch::Tensor& grad_hidden,
                               const torch::Tensor& grad_weight,
                               const torch::Tensor& total) {
    ctx->save_for_backward({grad_hidden, grad_weight});
    return total.clone();
  }
  static torch::autograd::tensor_list backward(
      torch::autograd::AutogradContext* ctx,
      torch::autograd::tensor_list grad_out) {
    const auto saved = ctx->get_saved_variables();
    const torch::Tensor g = grad_out[0];
    return {saved[0] * g, saved[1] * g, torch::Tensor(), torch::Tensor(),
            torch::Tensor()};
  }
};

// Rows [start, end) of targets whose leading dimensions are flattened.
TeacherTargets TokenRows(const TeacherTargets& t, int64_t start, int64_t end) {
  TeacherTargets out = t;
  if (t.form == TeacherTargets::Form::kDense) {
    out.probs = t.probs.reshape({-1, t.probs.size(-1)}).slice(0, start, end);
  } else if (t.form == TeacherTargets::Form::kHidden) {
    out.hidden = t.hidden.reshape({-1, t.hidden.size(-1)}).slice(0, start, end);
  } else {
    const int64_t k = t.values.size(-1);
    out.values = t.values.reshape({-1, k}).slice(0, start, end);
    out.indices = t.indices.reshape({-1, k}).slice(0, start, end);
    out.tail_mass = t.tail_mass.reshape({-1}).slice(0, start, end);
  }
  return out;
}

}  // namespace

absl::StatusOr<CompositeResult> CompositeLoss::ComputeOverHead(
    const HeadLossInputs& in) const {
  if (!in.hidden.defined() || !in.head_weight.defined() ||
      in.hidden.dim() != 3 || in.head_weight.dim() != 2 ||
      in.hidden.size(2) != in.head_weight.size(1) || !in.labels.defined() ||
      in.labels.sizes() != in.hidden.sizes().slice(0, 2) ||
      in.chunk_tokens < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the chunked head loss needs hidden [N, S, H], head [V, H] and labels "
        "[N, S]; got hidden ",
        in.hidden.defined() ? ShapeString(in.hidden.sizes()) : "none",
        ", head ",
        in.head_weight.defined() ? ShapeString(in.head_weight.sizes()) : "none",
        ", labels ",
        in.labels.defined() ? ShapeString(in.labels.sizes()) : "none",
        " and chunks of ", in.chunk_tokens));
  }
  if (in.teacher != nullptr &&
      (in.teacher->batch_shape() != in.hidden.sizes().slice(0, 2) ||
       in.teacher->num_classes != in.head_weight.size(0))) {
    return absl::InvalidArgumentError(absl::StrCat(
        "teacher targets cover ", ShapeString(in.teacher->batch_shape()),
        " over ", in.teacher->num_classes,
        " classes but the student's tokens are ",
        ShapeString(in.hidden.sizes().slice(0, 2)), " over ",
        in.head_weight.size(0)));
  }
  CompositeResult result;
  absl::Status status = TorchCall("the chunked head loss", [&]() {
    torch::AutoGradMode grad_mode(true);
    const int64_t m = in.hidden.size(0) * in.hidden.size(1);
    const torch::Tensor hidden =
        in.hidden.detach().reshape({m, in.hidden.size(2)});
    const torch::Tensor weight = in.head_weight.detach().requires_grad_(true);
    const torch::Tensor labels = in.labels.reshape({m});
    const torch::Tensor counted = labels != kIgnoreLabel;
    const int64_t targets = counted.sum().item<int64_t>();
    torch::Tensor grad_hidden = torch::zeros_like(hidden);
    torch::Tensor grad_weight = torch::zeros_like(weight);
    double total = 0;
    for (int64_t start = 0; start < m && targets > 0;
         start += in.chunk_tokens) {
      const int64_t end = std::min(m, start + in.chunk_tokens);
      const int64_t real = counted.slice(0, start, end).sum().item<int64_t>();
      if (real == 0) continue;
      const double share = static_cast<double>(real) / targets;
      const torch::Tensor h =
          hidden.slice(0, start, end).detach().requires_grad_(true);
      std::optional<TeacherTargets> chunk_targets;
      if (in.teacher != nullptr) {
        chunk_targets = TokenRows(*in.teacher, start, end);
      }
      LossInputs chunk;
      chunk.student_logits = Linear(h, weight);
      chunk.teacher = chunk_targets ? &*chunk_targets : nullptr;
      chunk.labels = labels.slice(0, start, end);
      chunk.step = in.step;
      chunk.epoch = in.epoch;
      chunk.total_steps = in.total_steps;
      absl::StatusOr<CompositeResult> piece = Compute(chunk);
      if (!piece.ok()) return piece.status();
      const torch::Tensor scaled = piece->total * share;
      const torch::autograd::variable_list grads =
          torch::autograd::grad({scaled}, {h, weight});
      grad_hidden.slice(0, start, end).add_(grads[0]);
      grad_weight.add_(grads[1]);
      total += scaled.item<double>();
      for (const auto& [name, v] : piece->terms) {
        result.terms[name] += v * share;
      }
    }
    if (targets == 0) {
      for (const std::string& name : term_names()) result.terms[name] = 0;
    }
    result.total = PrecomputedGrad::apply(
        in.hidden, in.head_weight,
        grad_hidden.reshape(in.hidden.sizes()).to(in.hidden.dtype()),
        grad_weight.to(in.head_weight.dtype()),
        torch::tensor(total, in.hidden.options().requires_grad(false)));
    return absl::OkStatus();
  });
  if (!status.ok()) return status;
  return result;
}

}  // namespace distill::losses
