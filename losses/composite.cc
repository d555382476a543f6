#include "losses/composite.h"

#include <cmath>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "common/torch_status.h"

namespace distill::losses {

absl::StatusOr<CompositeLoss> CompositeLoss::Create(
    const std::vector<TermSpec>& terms, const LossRegistry& registry) {
  if (terms.empty()) {
    return absl::InvalidArgumentError("the loss has no terms");
  }
  CompositeLoss composite;
  absl::flat_hash_set<std::string> seen;
  for (const TermSpec& spec : terms) {
    if (!seen.insert(spec.name).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("loss term '", spec.name, "' is listed twice"));
    }
    if (!std::isfinite(spec.weight) || spec.weight < 0.0) {
      return absl::InvalidArgumentError(
          absl::StrCat("loss term '", spec.name, "' has weight ", spec.weight,
                       "; weights must be finite and >= 0"));
    }
    if (spec.weight_schedule && !(std::isfinite(spec.weight_schedule->start) &&
                                  spec.weight_schedule->start >= 0.0 &&
                                  std::isfinite(spec.weight_schedule->end) &&
                                  spec.weight_schedule->end >= 0.0)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "loss term '", spec.name, "' has a weight schedule from ",
          spec.weight_schedule->start, " to ", spec.weight_schedule->end,
          "; weights must be finite and >= 0"));
    }
    DISTILL_ASSIGN_OR_RETURN(LossEntry entry, registry.Find(spec.name));
    DISTILL_ASSIGN_OR_RETURN(std::unique_ptr<Loss> loss,
                             registry.Create(spec.name, spec.params));
    composite.needs_teacher_ = composite.needs_teacher_ || entry.needs_teacher;
    composite.terms_.push_back(
        Term{spec.name, spec.weight, spec.weight_schedule, std::move(loss)});
  }
  return composite;
}

absl::StatusOr<CompositeResult> CompositeLoss::Compute(
    const LossInputs& given) const {
  // Hidden-state targets become probabilities here, once for all terms
  // (the chunked head loss calls this a chunk of positions at a time).
  LossInputs inputs = given;
  TeacherTargets materialized;
  if (given.teacher != nullptr &&
      given.teacher->form == TeacherTargets::Form::kHidden) {
    DISTILL_ASSIGN_OR_RETURN(
        materialized,
        TorchCall("the teacher's probabilities from its hidden states",
                  [&] { return given.teacher->Materialized(); }));
    inputs.teacher = &materialized;
  }
  CompositeResult result;
  for (const Term& term : terms_) {
    absl::StatusOr<torch::Tensor> value = term.loss->Compute(inputs);
    if (!value.ok()) {
      return Annotate(value.status(),
                      absl::StrCat("loss term '", term.name, "'"));
    }
    DISTILL_RETURN_IF_ERROR(
        TorchCall(absl::StrCat("loss term '", term.name, "'"), [&]() {
          result.terms[term.name] = value->detach().item<double>();
          const double weight =
              term.weight_schedule
                  ? term.weight_schedule->At(inputs.step, inputs.total_steps)
                  : term.weight;
          torch::Tensor weighted = *value * weight;
          result.total =
              result.total.defined() ? result.total + weighted : weighted;
        }));
  }
  return result;
}

std::vector<std::string> CompositeLoss::term_names() const {
  std::vector<std::string> names;
  names.reserve(terms_.size());
  for (const Term& term : terms_) names.push_back(term.name);
  return names;
}

}  // namespace distill::losses
