// Test-set evaluation: accuracy overall and per class (an average can hide
// the one class that matters), plus the hard-label cross entropy.
#ifndef DISTILL_TRAINER_INTERNAL_EVALUATE_H_
#define DISTILL_TRAINER_INTERNAL_EVALUATE_H_

#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <vector>

#include "absl/status/statusor.h"
#include "data/dataset.h"
#include "student/model.h"

namespace distill::trainer {

struct EvalResult {
  double accuracy = 0;
  double loss = 0;
  std::vector<double> per_class_accuracy;
  int64_t samples = 0;

  nlohmann::json ToJson() const;
};

// Runs `model` in eval mode over the whole `dataset` and restores its
// previous training mode flag to train(`restore_train`).
absl::StatusOr<EvalResult> Evaluate(student::Model& model,
                                    const data::Dataset& dataset,
                                    int64_t batch_size, bool restore_train);

// Evaluates any forward function (e.g. the QAT stage's fake-quantized
// network, already in eval mode) the same way, without autograd. When given,
// `predictions` receives each sample's argmax and `logits` the [N, C]
// logits, in dataset order.
absl::StatusOr<EvalResult> EvaluateForward(
    const std::function<torch::Tensor(const torch::Tensor&)>& forward,
    const data::Dataset& dataset, int64_t batch_size,
    std::vector<int64_t>* predictions = nullptr,
    torch::Tensor* logits = nullptr);

}  // namespace distill::trainer

#endif  // DISTILL_TRAINER_INTERNAL_EVALUATE_H_
