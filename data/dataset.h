// The dataset interface: random access to samples by id: images as float
// tensors (normalized, not augmented) with one int64 label each, or token
// windows as int64 ids with one next-token label per position.
// Implementations are immutable after construction, so every const method is
// thread-safe.
#ifndef DISTILL_DATA_DATASET_H_
#define DISTILL_DATA_DATASET_H_

#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "common/labels.h"

namespace distill::data {

// A batch of samples. `ids` are the dataset ids the rows came from, so a
// teacher target or a cache entry can always be paired with its sample.
struct Batch {
  torch::Tensor ids;     // int64 [N]
  torch::Tensor inputs;  // float [N, ...input_shape], or int64 [N, S] tokens
  torch::Tensor labels;  // int64 [N], or [N, S] (kIgnoreLabel where none)
  // Optional: int64 [N(, S), k] class ids at which the teacher is asked for
  // its probabilities instead of its usual targets (the student's own top
  // k of an on-policy batch); undefined: the teacher's usual targets.
  torch::Tensor teacher_indices;
};

class Dataset {
 public:
  virtual ~Dataset() = default;

  virtual int64_t size() const = 0;
  virtual int64_t num_classes() const = 0;
  // Shape of one sample, e.g. {1, 28, 28}.
  virtual std::vector<int64_t> input_shape() const = 0;
  // Human-readable origin, used in error messages ("fashion-mnist train").
  virtual std::string name() const = 0;
  // The input value of an all-zero raw pixel after normalization; augmentation
  // pads with it so padding looks like background.
  virtual float background_value() const = 0;

  // Fetches samples by id. OutOfRange names the first bad id.
  virtual absl::StatusOr<Batch> Get(absl::Span<const int64_t> ids) const = 0;
};

}  // namespace distill::data

#endif  // DISTILL_DATA_DATASET_H_
