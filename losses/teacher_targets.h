// Teacher targets as the losses see them: temperature-softened probabilities
// p_T = softmax(z / T), either dense or as sparse top-k (values, indices and
// the tail mass the k values leave out), for [N, C] or [N, S, V] outputs.
// A plain value type (tensors are shared, not copied); immutable by
// convention, so safe to read from several threads.
#ifndef DISTILL_LOSSES_TEACHER_TARGETS_H_
#define DISTILL_LOSSES_TEACHER_TARGETS_H_

#include <torch/torch.h>

#include <cstdint>

#include "absl/status/statusor.h"

namespace distill::losses {

struct TeacherTargets {
  enum class Form { kDense, kTopK };

  Form form = Form::kDense;
  // The temperature T the probabilities were softened at (> 0).
  double temperature = 1.0;
  // Size of the last dimension of the full distribution (C or V).
  int64_t num_classes = 0;

  // kDense: float [..., C], rows sum to 1.
  torch::Tensor probs;
  // kTopK: float [..., k] probabilities of the k largest classes, int64
  // [..., k] their class indices, and float [...] tail = 1 - sum(values).
  torch::Tensor values;
  torch::Tensor indices;
  torch::Tensor tail_mass;

  // Softmax of `logits / temperature` over the last dimension.
  static TeacherTargets DenseFromLogits(const torch::Tensor& logits,
                                        double temperature);
  // The k most probable classes of softmax(logits / temperature).
  static TeacherTargets TopKFromLogits(const torch::Tensor& logits,
                                       double temperature, int64_t k);

  // Leading shape ([N] or [N, S]) the targets cover.
  torch::IntArrayRef batch_shape() const;
  int64_t batch_size() const;
  // Selects rows (first dimension) by position, for splitting a batch.
  TeacherTargets Rows(const torch::Tensor& positions) const;
  // Concatenates targets of the same form, temperature and class count
  // along the first dimension. InvalidArgument when they differ.
  static absl::StatusOr<TeacherTargets> Concat(
      const std::vector<TeacherTargets>& parts);
};

}  // namespace distill::losses

#endif  // DISTILL_LOSSES_TEACHER_TARGETS_H_
