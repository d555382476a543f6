#include "trainer/internal/evaluate.h"

#include <numeric>

#include "common/status.h"
#include "common/torch_status.h"
#include "data/loader.h"

namespace distill::trainer {

nlohmann::json EvalResult::ToJson(const std::string& split) const {
  if (language_model) {
    nlohmann::json out = {{split + "_perplexity", perplexity},
                          {split + "_accuracy", accuracy},
                          {split + "_loss", loss},
                          {split + "_tokens", samples}};
    if (teacher_agreement >= 0) {
      out[split + "_teacher_agreement"] = teacher_agreement;
    }
    return out;
  }
  return {{split + "_accuracy", accuracy},
          {split + "_loss", loss},
          {"per_class_accuracy", per_class_accuracy},
          {split + "_samples", samples}};
}

absl::StatusOr<EvalResult> Evaluate(student::Model& model,
                                    const data::Dataset& dataset,
                                    int64_t batch_size, bool restore_train) {
  model.train(false);
  auto result =
      EvaluateForward([&](const torch::Tensor& x) { return model.forward(x); },
                      dataset, batch_size);
  model.train(restore_train);
  return result;
}

absl::StatusOr<EvalResult> EvaluateForward(
    const std::function<torch::Tensor(const torch::Tensor&)>& forward,
    const data::Dataset& dataset, int64_t batch_size,
    std::vector<int64_t>* predictions, torch::Tensor* logits) {
  std::vector<torch::Tensor> all_logits;
  if (predictions != nullptr) predictions->clear();
  std::vector<int64_t> ids(dataset.size());
  std::iota(ids.begin(), ids.end(), 0);
  data::LoaderOptions options;
  options.batch_size = batch_size;
  data::Loader loader(dataset, std::move(ids), options);

  const int64_t classes = dataset.num_classes();
  std::vector<int64_t> correct(classes, 0), total(classes, 0);
  double loss_sum = 0;
  while (true) {
    DISTILL_ASSIGN_OR_RETURN(std::optional<data::Batch> batch, loader.Next());
    if (!batch) break;
    DISTILL_RETURN_IF_ERROR(TorchCall("evaluating on the test set", [&] {
      torch::NoGradGuard no_grad;
      torch::Tensor out = forward(batch->inputs);
      if (logits != nullptr) all_logits.push_back(out.detach());
      loss_sum +=
          torch::nn::functional::cross_entropy(
              out, batch->labels,
              torch::nn::functional::CrossEntropyFuncOptions().reduction(
                  torch::kSum))
              .item<double>();
      torch::Tensor argmax = out.argmax(1);
      if (predictions != nullptr) {
        auto a = argmax.accessor<int64_t, 1>();
        for (int64_t i = 0; i < a.size(0); ++i) predictions->push_back(a[i]);
      }
      torch::Tensor hit = argmax.eq(batch->labels);
      auto labels = batch->labels.accessor<int64_t, 1>();
      auto hits = hit.accessor<bool, 1>();
      for (int64_t i = 0; i < labels.size(0); ++i) {
        ++total[labels[i]];
        correct[labels[i]] += hits[i] ? 1 : 0;
      }
    }));
  }
  if (logits != nullptr && !all_logits.empty())
    *logits = torch::cat(all_logits);

  EvalResult result;
  int64_t all_correct = 0;
  for (int64_t c = 0; c < classes; ++c) {
    result.samples += total[c];
    all_correct += correct[c];
    result.per_class_accuracy.push_back(
        total[c] == 0 ? 0.0 : static_cast<double>(correct[c]) / total[c]);
  }
  if (result.samples > 0) {
    result.accuracy = static_cast<double>(all_correct) / result.samples;
    result.loss = loss_sum / result.samples;
  }
  return result;
}

}  // namespace distill::trainer
