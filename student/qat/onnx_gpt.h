// ONNX export of a `gpt` language model as its GptQuant quantizes it, for
// ONNX Runtime (opset 17 for LayerNormalization, plus com.microsoft 1 for
// MatMulNBits). Input "tokens" int64 [batch, seq_len]; output "logits"
// float [batch, seq_len, vocab]. No KV cache: a generator feeds the whole
// prefix (right-padded to seq_len; the model is causal, so padding after a
// position never changes its logits). Three forms:
//  - kFloat: MatMul / Gather on the float weights;
//  - kInt8: QDQ. Every weight matrix is stored int8 per row (axis 0) with a
//    DequantizeLinear, read by Gather for the embeddings and transposed
//    into MatMul for the Linear layers and the head (the tied head shares
//    the embedding's int8 matrix); every Linear's input passes
//    QuantizeLinear -> DequantizeLinear at its calibrated scale;
//  - kNBits: every Linear and the head as MatMulNBits (4-bit groups), with
//    an AWQ-scaled layer's input multiplied by 1 / s first; the embeddings
//    read the same packed codes and unpack them in the graph (Gather,
//    integer Div/Sub, Cast, then (code - zero point) · scale), so a tied
//    head and embedding share one 4-bit matrix.
// LayerNorm, softmax, GELU (erf form) and residual adds are float in all
// three. The model is checked by onnx::checker before it is returned.
#ifndef DISTILL_STUDENT_QAT_ONNX_GPT_H_
#define DISTILL_STUDENT_QAT_ONNX_GPT_H_

#include <cstdint>

#include "absl/status/statusor.h"
#include "onnx/onnx_pb.h"
#include "student/gpt.h"
#include "student/qat/gpt_quant.h"

namespace distill::student::qat {

enum class GptOnnxForm { kFloat, kInt8, kNBits };

inline constexpr int64_t kGptOnnxOpset = 17;

// `quant` is `model`'s quantizer: kInt8 needs it calibrated (else
// FailedPrecondition), kNBits reads its group spec and AWQ scales.
// InvalidArgument for a seq_len outside [1, context].
absl::StatusOr<onnx::ModelProto> BuildGptOnnx(Gpt model, const GptQuant& quant,
                                              GptOnnxForm form,
                                              int64_t seq_len);

}  // namespace distill::student::qat

#endif  // DISTILL_STUDENT_QAT_ONNX_GPT_H_
