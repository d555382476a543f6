// Teacher targets: building them from logits, slicing and joining batches.
//
// Precision: probabilities are computed and stored in float32, except that
// float64 logits keep float64 (tests and reference checks need the extra
// digits; a model's float32/half/bfloat16 logits always give float32).
#include "losses/teacher_targets.h"

#include <algorithm>
#include <limits>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/linear.h"
#include "common/status.h"
#include "common/torch_status.h"

namespace distill::losses {
namespace {

torch::Dtype ProbDtype(const torch::Tensor& logits) {
  return logits.scalar_type() == torch::kDouble ? torch::kDouble
                                                : torch::kFloat;
}

std::string ShapeString(torch::IntArrayRef shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

// Sizes of `t` without its first dimension.
std::vector<int64_t> TrailingShape(const torch::Tensor& t) {
  if (!t.defined() || t.dim() == 0) return {};
  return t.sizes().slice(1).vec();
}

// Targets of one form with no tensors yet: what every factory starts from.
TeacherTargets Empty(TeacherTargets::Form form, double temperature,
                     int64_t num_classes) {
  TeacherTargets targets;
  targets.form = form;
  targets.temperature = temperature;
  targets.num_classes = num_classes;
  return targets;
}

// The probability softmax(z) leaves to the classes not in `ids` ([..., k]),
// from the full logits in log space (`log_norm` = logsumexp(z), keepdim):
// 1 - sum(listed) in float32 is rounding noise once the tail is below ~1e-6
// of the mass (k = 1,024 of a peaked distribution).
torch::Tensor UnlistedMass(const torch::Tensor& z,
                           const torch::Tensor& log_norm,
                           const torch::Tensor& ids) {
  const torch::Tensor unlisted =
      z.scatter(-1, ids, -std::numeric_limits<double>::infinity());
  return (torch::logsumexp(unlisted, -1, /*keepdim=*/true) - log_norm)
      .exp()
      .squeeze(-1);
}
}  // namespace

const char* FormName(TeacherTargets::Form form) {
  switch (form) {
    case TeacherTargets::Form::kDense:
      return "dense";
    case TeacherTargets::Form::kTopK:
      return "top-k";
    case TeacherTargets::Form::kSampled:
      return "sampled";
    case TeacherTargets::Form::kHidden:
      return "hidden";
  }
  return "unknown";
}

torch::Tensor OutputHead::Logits(const torch::Tensor& hidden) const {
  // Linear, as the zoo's language models compute their own logits: the
  // same values to the bit, on oneDNN.
  torch::Tensor z = Linear(hidden.to(torch::kFloat), weight, bias);
  if (logit_scale != 1.0) z = z * logit_scale;
  if (logit_softcap > 0) z = torch::tanh(z / logit_softcap) * logit_softcap;
  return z;
}

TeacherTargets TeacherTargets::FromHidden(
    const torch::Tensor& hidden, std::shared_ptr<const OutputHead> head,
    double temperature) {
  TeacherTargets targets =
      Empty(Form::kHidden, temperature, head->weight.size(0));
  targets.hidden = hidden.detach().to(torch::kFloat);
  targets.head = std::move(head);
  return targets;
}

TeacherTargets TeacherTargets::Materialized() const {
  if (form != Form::kHidden) return *this;
  return DenseFromLogits(head->Logits(hidden), temperature);
}

TeacherTargets TeacherTargets::DenseFromLogits(const torch::Tensor& logits,
                                               double temperature) {
  TeacherTargets targets =
      Empty(TeacherTargets::Form::kDense, temperature, logits.size(-1));
  // torch::softmax subtracts the row maximum, so large logits do not
  // overflow; dividing first keeps that true for small temperatures.
  targets.probs =
      torch::softmax(logits.detach().to(ProbDtype(logits)) / temperature, -1);
  return targets;
}

TeacherTargets TeacherTargets::AtIndices(const torch::Tensor& logits,
                                         double temperature,
                                         const torch::Tensor& indices,
                                         torch::Tensor* log_probs) {
  TeacherTargets targets =
      Empty(TeacherTargets::Form::kTopK, temperature, logits.size(-1));
  const torch::Tensor z = logits.detach().to(ProbDtype(logits)) / temperature;
  const torch::Tensor log_norm = torch::logsumexp(z, -1, /*keepdim=*/true);
  const torch::Tensor ids = indices.to(z.device(), torch::kLong);
  const torch::Tensor logp = z.gather(-1, ids) - log_norm;
  targets.values = logp.exp();
  targets.indices = ids;
  targets.tail_mass = UnlistedMass(z, log_norm, ids);
  if (log_probs != nullptr) *log_probs = logp;
  return targets;
}

TeacherTargets TeacherTargets::TopKFromLogits(const torch::Tensor& logits,
                                              double temperature, int64_t k) {
  TeacherTargets targets =
      Empty(TeacherTargets::Form::kTopK, temperature, logits.size(-1));
  // k is clamped to [1, C] rather than failing: asking for more classes than
  // exist means "all of them".
  const int64_t kept = std::clamp<int64_t>(k, 1, targets.num_classes);
  const torch::Tensor z = logits.detach().to(ProbDtype(logits)) / temperature;
  const torch::Tensor log_norm = torch::logsumexp(z, -1, /*keepdim=*/true);
  auto [top_z, indices] = torch::topk(z, kept, /*dim=*/-1, /*largest=*/true,
                                      /*sorted=*/true);
  targets.values = (top_z - log_norm).exp();
  targets.indices = indices;
  if (kept == targets.num_classes) {
    targets.tail_mass =
        torch::zeros(top_z.sizes().slice(0, top_z.dim() - 1), top_z.options());
    return targets;
  }
  targets.tail_mass = UnlistedMass(z, log_norm, indices);
  return targets;
}

TeacherTargets TeacherTargets::SampledFromLogits(const torch::Tensor& logits,
                                                 double temperature,
                                                 int64_t m) {
  return SampledFromProbs(
      torch::softmax(logits.detach().to(ProbDtype(logits)) / temperature, -1),
      temperature, m);
}

TeacherTargets TeacherTargets::SampledFromProbs(const torch::Tensor& probs,
                                                double temperature, int64_t m) {
  TeacherTargets targets =
      Empty(TeacherTargets::Form::kSampled, temperature, probs.size(-1));
  targets.samples = m;
  const torch::Tensor rows = probs.reshape({-1, targets.num_classes});
  // Sorted draws, then each run of equal ids collapsed into its first slot:
  // `group` numbers the runs 0, 1, ... along the row, and scattering by it
  // puts run j's id and length into slot j.
  const torch::Tensor draws =
      std::get<0>(torch::multinomial(rows, m, /*replacement=*/true).sort(-1));
  torch::Tensor starts = torch::ones_like(draws, torch::kBool);
  if (m > 1) {
    starts.slice(1, 1).copy_(draws.slice(1, 1) != draws.slice(1, 0, m - 1));
  }
  const torch::Tensor group = starts.to(torch::kLong).cumsum(-1) - 1;
  const torch::Tensor counts =
      torch::zeros_like(draws).scatter_add_(1, group, torch::ones_like(draws));
  std::vector<int64_t> shape = probs.sizes().vec();
  shape.back() = m;
  targets.indices =
      torch::zeros_like(draws).scatter_(1, group, draws).reshape(shape);
  targets.values =
      (counts.to(torch::kFloat) / static_cast<double>(m)).reshape(shape);
  shape.pop_back();
  targets.tail_mass = torch::zeros(shape, torch::kFloat);
  return targets;
}

torch::IntArrayRef TeacherTargets::batch_shape() const {
  if (form == Form::kDense || form == Form::kHidden) {
    const torch::Tensor& rows = form == Form::kDense ? probs : hidden;
    if (!rows.defined() || rows.dim() == 0) return {};
    return rows.sizes().slice(0, rows.dim() - 1);
  }
  if (!tail_mass.defined()) return {};
  return tail_mass.sizes();
}

int64_t TeacherTargets::batch_size() const {
  const torch::IntArrayRef shape = batch_shape();
  return shape.empty() ? 0 : shape[0];
}

TeacherTargets TeacherTargets::Rows(const torch::Tensor& positions) const {
  TeacherTargets rows = *this;
  auto select = [&positions](const torch::Tensor& t) -> torch::Tensor {
    if (!t.defined()) return t;
    return t.index_select(0,
                          positions.to(t.device(), torch::kLong).reshape({-1}));
  };
  rows.probs = select(probs);
  rows.values = select(values);
  rows.indices = select(indices);
  rows.tail_mass = select(tail_mass);
  rows.hidden = select(hidden);
  return rows;
}

absl::StatusOr<TeacherTargets> TeacherTargets::Concat(
    const std::vector<TeacherTargets>& parts) {
  if (parts.empty()) {
    return absl::InvalidArgumentError(
        "cannot concatenate zero teacher targets");
  }
  const TeacherTargets& first = parts.front();
  for (size_t i = 1; i < parts.size(); ++i) {
    const TeacherTargets& part = parts[i];
    if (part.form != first.form) {
      return absl::InvalidArgumentError(
          absl::StrCat("teacher targets part ", i, " is ", FormName(part.form),
                       " but part 0 is ", FormName(first.form)));
    }
    if (part.temperature != first.temperature) {
      return absl::InvalidArgumentError(absl::StrCat(
          "teacher targets part ", i, " has temperature ", part.temperature,
          " but part 0 has ", first.temperature));
    }
    if (part.samples != first.samples) {
      return absl::InvalidArgumentError(
          absl::StrCat("teacher targets part ", i, " has ", part.samples,
                       " samples per row but part 0 has ", first.samples));
    }
    if (part.num_classes != first.num_classes) {
      return absl::InvalidArgumentError(
          absl::StrCat("teacher targets part ", i, " has ", part.num_classes,
                       " classes but part 0 has ", first.num_classes));
    }
    if (part.head != first.head) {
      return absl::InvalidArgumentError(absl::StrCat(
          "teacher targets part ", i, " comes with another output head"));
    }
    auto rows = [](const TeacherTargets& t) -> const torch::Tensor& {
      return t.form == Form::kDense    ? t.probs
             : t.form == Form::kHidden ? t.hidden
                                       : t.values;
    };
    const torch::Tensor& mine = rows(part);
    const torch::Tensor& theirs = rows(first);
    if (TrailingShape(mine) != TrailingShape(theirs)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "teacher targets part ", i, " has shape ", ShapeString(mine.sizes()),
          " but part 0 has ", ShapeString(theirs.sizes()),
          " (only the first dimension may differ)"));
    }
  }
  return TorchCall("concatenating teacher targets",
                   [&]() -> absl::StatusOr<TeacherTargets> {
                     TeacherTargets joined = first;
                     auto cat = [&parts](torch::Tensor TeacherTargets::*field) {
                       std::vector<torch::Tensor> tensors;
                       tensors.reserve(parts.size());
                       for (const TeacherTargets& part : parts) {
                         tensors.push_back(part.*field);
                       }
                       return torch::cat(tensors, 0);
                     };
                     if (first.form == Form::kDense) {
                       joined.probs = cat(&TeacherTargets::probs);
                     } else if (first.form == Form::kHidden) {
                       joined.hidden = cat(&TeacherTargets::hidden);
                     } else {
                       joined.values = cat(&TeacherTargets::values);
                       joined.indices = cat(&TeacherTargets::indices);
                       joined.tail_mass = cat(&TeacherTargets::tail_mass);
                     }
                     return joined;
                   });
}

}  // namespace distill::losses
