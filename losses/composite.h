// A weighted sum of loss terms, as a job's `loss` list configures it. Logs
// each term by name. Immutable after Create; Compute is thread-safe.
#ifndef DISTILL_LOSSES_COMPOSITE_H_
#define DISTILL_LOSSES_COMPOSITE_H_

#include <torch/torch.h>

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "losses/loss.h"
#include "losses/registry.h"
#include "losses/schedule.h"

namespace distill::losses {

struct TermSpec {
  std::string name;
  double weight = 1.0;
  LossParams params;
  // When set, replaces `weight`: evaluated at LossInputs::step of
  // LossInputs::total_steps on every Compute.
  std::optional<ValueSchedule> weight_schedule = std::nullopt;
};

struct CompositeResult {
  torch::Tensor total;                  // scalar, differentiable
  std::map<std::string, double> terms;  // unweighted value of each term
};

class CompositeLoss {
 public:
  // Errors from the registry (unknown name, bad parameter), and
  // InvalidArgument for no terms, a negative or non-finite weight (or
  // schedule start or end), or a name listed twice.
  static absl::StatusOr<CompositeLoss> Create(
      const std::vector<TermSpec>& terms,
      const LossRegistry& registry = LossRegistry::Global());

  absl::StatusOr<CompositeResult> Compute(const LossInputs& inputs) const;
  // True when any term reads teacher targets.
  bool needs_teacher() const { return needs_teacher_; }
  std::vector<std::string> term_names() const;

 private:
  struct Term {
    std::string name;
    double weight;
    std::optional<ValueSchedule> weight_schedule;
    std::shared_ptr<const Loss> loss;
  };
  std::vector<Term> terms_;
  bool needs_teacher_ = false;
};

}  // namespace distill::losses

#endif  // DISTILL_LOSSES_COMPOSITE_H_
