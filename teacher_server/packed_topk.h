// The TOP_K_PACKED record of one row (teacher.proto): the largest and
// smallest listed log-probability (float32), k class ids in
// ceil(log2 num_classes) bits each (least significant bit first), and k
// 8-bit codes placing each listed log-probability between the two. About
// half of TOP_K's bytes: at k = 128 and V = 32,000, 8 + 240 + 128 = 376
// bytes a row (plus the 4-byte tail mass) instead of 768 + 4. Stateless;
// safe from any thread.
#ifndef DISTILL_TEACHER_SERVER_PACKED_TOPK_H_
#define DISTILL_TEACHER_SERVER_PACKED_TOPK_H_

#include <torch/torch.h>

#include <cstdint>

#include "absl/status/statusor.h"

namespace distill::teacher {

// Bits per class id: ceil(log2 num_classes), at least 1.
int PackedIdBits(int64_t num_classes);

// Bytes of one row's record: 8 + ceil(k * bits / 8) + k.
int64_t PackedRowBytes(int64_t k, int64_t num_classes);

// UINT8 [R..., ceil(k * bits / 8)]: the class ids `indices` ([R..., k], any
// integer dtype, each in [0, num_classes)) in PackedIdBits(num_classes) bits
// each, least significant bit first. TOP_K_PACKED's id field, and the offline
// target store's.
torch::Tensor PackIds(const torch::Tensor& indices, int64_t num_classes);

// Reads ids written by PackIds: int64 [R..., k]. InvalidArgument when `bytes`
// is not UINT8 [R..., ceil(k * bits / 8)] or an id is >= num_classes.
absl::StatusOr<torch::Tensor> UnpackIds(const torch::Tensor& bytes, int64_t k,
                                        int64_t num_classes);

// The log-probability below which listed values are stored as this floor
// (a probability of 0 has no logarithm): e^-80 is below what any loss
// notices.
inline constexpr float kPackedLogFloor = -80.0f;

// UINT8 [R..., PackedRowBytes(k, num_classes)] records of `values` (the
// listed probabilities, [R..., k]) and `indices` (their class ids in
// [0, num_classes), same shape). Probabilities are not renormalized here.
torch::Tensor PackTopK(const torch::Tensor& values,
                       const torch::Tensor& indices, int64_t num_classes);

struct UnpackedTopK {
  // [R..., k] float32: exp of the decoded log-probabilities.
  torch::Tensor values;
  // [R..., k] int64 class ids.
  torch::Tensor indices;
  // [R...] float32: the most a decoded value may be off, relative
  // (exp((hi - lo) / 510) - 1): half a quantization step in log space.
  torch::Tensor relative_error;
};

// Reads records made by PackTopK. InvalidArgument naming the problem when
// `records` is not UINT8 [R..., PackedRowBytes(k, num_classes)], an id is
// >= num_classes, or a row's hi / lo are not finite, lo > hi or hi > 0
// (beyond float rounding).
absl::StatusOr<UnpackedTopK> UnpackTopK(const torch::Tensor& records, int64_t k,
                                        int64_t num_classes);

}  // namespace distill::teacher

#endif  // DISTILL_TEACHER_SERVER_PACKED_TOPK_H_
