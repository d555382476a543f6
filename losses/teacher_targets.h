// Teacher targets as the losses see them: temperature-softened probabilities
// p_T = softmax(z / T), either dense, as sparse top-k (values, indices and
// the tail mass the k values leave out), as ids sampled from p_T with
// their frequencies, or as the teacher's final hidden states with its output
// head (p_T computed from them when needed), for [N, C] or [N, S, V] outputs.
// A plain value type (tensors are shared, not copied); immutable by
// convention, so safe to read from several threads.
#ifndef DISTILL_LOSSES_TEACHER_TARGETS_H_
#define DISTILL_LOSSES_TEACHER_TARGETS_H_

#include <torch/torch.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"

namespace distill::losses {

// A language-model teacher's output head: logits
// z = logit_scale * (hidden @ weight^T + bias), then, when logit_softcap > 0,
// logit_softcap * tanh(z / logit_softcap).
struct OutputHead {
  torch::Tensor weight;  // float [V, H]
  torch::Tensor bias;    // float [V], or undefined for none
  double logit_scale = 1.0;
  double logit_softcap = 0.0;

  // Logits [..., V] (float32) for hidden states [..., H].
  torch::Tensor Logits(const torch::Tensor& hidden) const;
};

struct TeacherTargets {
  enum class Form { kDense, kTopK, kSampled, kHidden };

  Form form = Form::kDense;
  // The temperature T the probabilities were softened at (> 0).
  double temperature = 1.0;
  // Size of the last dimension of the full distribution (C or V).
  int64_t num_classes = 0;

  // kDense: float [..., C], rows sum to 1.
  torch::Tensor probs;
  // kTopK: float [..., k] probabilities of k listed classes (the k
  // largest, or classes a client chose, see AtIndices), int64 [..., k]
  // their class indices, and float [...] tail = 1 - sum(values).
  // kSampled: `samples` = m ids drawn with replacement from p_T per row,
  // as float [..., m] frequencies count / m of the distinct ids (int64
  // [..., m]; unused slots have frequency 0 and id 0) and a zero tail.
  // E[frequency of class c] = p_T(c): an unbiased estimate of the
  // distribution, where top-k is a biased one.
  torch::Tensor values;
  torch::Tensor indices;
  torch::Tensor tail_mass;
  int64_t samples = 0;
  // kHidden: the teacher's final hidden states, float [..., H], and the
  // head (shared, never copied) that makes them logits over num_classes.
  // Losses see them through Materialized(), a chunk of rows at a time.
  torch::Tensor hidden;
  std::shared_ptr<const OutputHead> head;

  // Softmax of `logits / temperature` over the last dimension.
  static TeacherTargets DenseFromLogits(const torch::Tensor& logits,
                                        double temperature);
  // The k most probable classes of softmax(logits / temperature).
  static TeacherTargets TopKFromLogits(const torch::Tensor& logits,
                                       double temperature, int64_t k);
  // kTopK targets at chosen classes: `indices` (integer [..., k], no class
  // twice within a row) of softmax(logits / temperature), with the tail
  // mass of the classes not listed computed in log space. `log_probs`, when
  // not null, receives log softmax(logits / temperature) at the indices
  // (float [..., k]), which exp() would round to 0 far out in the tail.
  static TeacherTargets AtIndices(const torch::Tensor& logits,
                                  double temperature,
                                  const torch::Tensor& indices,
                                  torch::Tensor* log_probs = nullptr);

  // m draws per row from softmax(logits / temperature), with the default
  // generator (seed it with torch::manual_seed for repeatable draws).
  static TeacherTargets SampledFromLogits(const torch::Tensor& logits,
                                          double temperature, int64_t m);
  // The same draws from p_T already computed (float or double [..., C]).
  static TeacherTargets SampledFromProbs(const torch::Tensor& probs,
                                         double temperature, int64_t m);

  // Hidden states [..., H] with the head that turns them into logits.
  static TeacherTargets FromHidden(const torch::Tensor& hidden,
                                   std::shared_ptr<const OutputHead> head,
                                   double temperature);
  // kHidden: the same rows as kDense, softmax(head(hidden) / T) (rows x V
  // floats: call it on a chunk of rows). Any other form: itself.
  TeacherTargets Materialized() const;

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

// "dense", "top-k", "sampled" or "hidden", for messages.
const char* FormName(TeacherTargets::Form form);

}  // namespace distill::losses

#endif  // DISTILL_LOSSES_TEACHER_TARGETS_H_
