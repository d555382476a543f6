// Checks of what a Distill stream sends, against the served model's Info.
// Each failure is an absl::Status whose code is the gRPC code the stream ends
// with (InvalidArgument, or ResourceExhausted for a batch over max_batch) and
// whose message names the field and the value. Stateless; safe from any thread.
#ifndef DISTILL_TEACHER_SERVER_VALIDATION_H_
#define DISTILL_TEACHER_SERVER_VALIDATION_H_

#include <torch/torch.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "proto/teacher.pb.h"

namespace distill::teacher {

// Temperature finite and > 0; encoding one of Info's; for TOP_K,
// 1 <= top_k <= num_classes; for SAMPLED, 1 <= samples <= 255.
absl::Status ValidateHeader(const v1::StreamHeader& header,
                            const v1::InfoResponse& info);

// The batch's inputs as a tensor [N, input_shape...] of Info's input dtype,
// 1 <= N <= max_batch (ResourceExhausted above).
absl::StatusOr<torch::Tensor> DecodeInputs(const v1::InputBatch& batch,
                                           const v1::InfoResponse& info);

// The batch's class ids `indices` as int64 [N, output_shape[:-1]..., k]
// (an undefined tensor when it has none): INT32 of that shape for its N =
// `rows` samples, 1 <= k <= min(num_classes, max_k), every id in
// [0, num_classes) and none twice within a row, and an answer row
// (4 k + 4 bytes) that fits the stream's max_answer_bytes.
absl::StatusOr<torch::Tensor> DecodeIndices(const v1::InputBatch& batch,
                                            const v1::InfoResponse& info,
                                            const v1::StreamHeader& header,
                                            int64_t rows, int64_t max_k);

}  // namespace distill::teacher

#endif  // DISTILL_TEACHER_SERVER_VALIDATION_H_
