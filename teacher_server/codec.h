// Converts between LibTorch tensors / losses::TeacherTargets and the wire
// messages of proto/teacher.proto. Shared by the teacher server (encode), the
// trainer's client (decode) and the teacher-output cache (both). Every decode
// validates what it reads, since the bytes come from another process: a
// message whose dtype, shape, byte count or values are inconsistent is an
// InvalidArgument naming the field. Stateless; safe from any thread.
#ifndef DISTILL_TEACHER_SERVER_CODEC_H_
#define DISTILL_TEACHER_SERVER_CODEC_H_

#include <torch/torch.h>

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "losses/teacher_targets.h"
#include "proto/teacher.pb.h"

namespace distill::teacher {

// The most draws per row a SAMPLED answer may carry (counts are UINT8).
inline constexpr int64_t kMaxSamples = 255;

// The most dimensions a tensor on the wire may have. Every tensor the
// service knows has at most 4 ([N, C, H, W]); the bound keeps a hostile
// shape from costing memory or filling an error message.
inline constexpr int kMaxTensorRank = 8;

// "[2, 128]"; past kMaxTensorRank dimensions only the first ones and the
// count ("[1, 1, ... (150000 dimensions)]"), so an error never echoes an
// unbounded shape back to the peer.
std::string ShapeString(absl::Span<const int64_t> shape);

// "DENSE_FP32", "TOP_K", "INDEX_LOGP", ...; "encoding 42" for unknown ones.
std::string EncodingName(v1::Encoding encoding);

// TOP_K or TOP_K_PACKED: the encodings of top-k targets.
bool IsTopK(v1::Encoding encoding);
// The k a top-k answer carries per row (TOP_K: its values' last dimension,
// TOP_K_PACKED: top_k); -1 when it states none.
int64_t TopKWidth(const v1::SoftTargets& targets);
// "FLOAT32", ...
std::string DTypeName(v1::Tensor::DType dtype);

// The wire dtype of a torch dtype; InvalidArgument for one the wire lacks.
absl::StatusOr<v1::Tensor::DType> WireDType(torch::Dtype dtype);

// Copies `tensor` (any device, made contiguous) to the wire as `dtype`,
// converting values when the dtypes differ.
v1::Tensor ToProto(const torch::Tensor& tensor, v1::Tensor::DType dtype);
// Same, keeping the tensor's own dtype; InvalidArgument when the wire has no
// such dtype.
absl::StatusOr<v1::Tensor> ToProto(const torch::Tensor& tensor);

// A CPU tensor owning a copy of the message's bytes. `what` names the field
// in errors ("inputs", "probs", ...). Half tensors come back as kHalf.
absl::StatusOr<torch::Tensor> FromProto(const v1::Tensor& message,
                                        absl::string_view what);

// Encodes teacher targets for the wire. Dense targets may be sent as
// DENSE_FP32, DENSE_FP16 or DENSE_LOGP_FP16, top-k targets as TOP_K or
// TOP_K_PACKED, sampled ones only as SAMPLED, hidden states only as
// HIDDEN_FP16 (the head travels separately); anything else is
// InvalidArgument.
absl::StatusOr<v1::SoftTargets> EncodeTargets(
    const losses::TeacherTargets& targets, v1::Encoding encoding);

// The INDEX_LOGP answer for `logits` [..., C] at temperature T and the
// batch's class ids `indices` [..., k] (validated by the caller):
// log softmax(logits / T) at the ids, and the tail mass of the others.
absl::StatusOr<v1::SoftTargets> EncodeAtIndices(const torch::Tensor& logits,
                                                double temperature,
                                                const torch::Tensor& indices);

// Decodes and validates: dtypes and shapes as teacher.proto states, indices in
// [0, num_classes), probabilities finite and in [0, 1], every row a
// distribution (dense rows, or top-k values plus tail mass, summing to 1
// within 1e-3 for DENSE_FP32 and 1e-2 for the fp16 encodings), sampled
// counts summing to `samples` in every row (TOP_K_PACKED: within its
// rows' quantization error on top, then scaled to sum to 1 exactly),
// temperature >= kMinTemperature
// (common/temperature.h). Sampled rows come
// back padded to `samples` columns.
// Probabilities come back as float32 whatever the wire precision.
// `expected_rows` (when >= 0) is the batch size the targets must cover.
// HIDDEN_FP16 answers need `head`, the teacher's output head (fetched with
// OutputHead): hidden [N, S, H] with H its width, finite, over its V
// classes. INDEX_LOGP answers need `indices`, the class ids the batch
// sent (integer [N(, S), k]): index_logp must have their shape, be numbers
// <= 0 (-inf: probability 0), and with tail_mass sum to 1 within 1e-3 per
// row; they come back as kTopK targets at those ids.
absl::StatusOr<losses::TeacherTargets> DecodeTargets(
    const v1::SoftTargets& message, int64_t expected_rows = -1,
    std::shared_ptr<const losses::OutputHead> head = nullptr,
    const torch::Tensor& indices = torch::Tensor());

}  // namespace distill::teacher

#endif  // DISTILL_TEACHER_SERVER_CODEC_H_
