// Group-wise quantized Linear layers in ONNX as ONNX Runtime's MatMulNBits
// (domain com.microsoft, version 1): Y = A · dequant(B)ᵀ, B the packed codes
// of PackMatMulNBits, dequantized per group as (code - zero point) · scale.
// The language-model export builds its graph from these nodes; a model of
// one Linear lets tests run a layer in ONNX Runtime against LibTorch.
#ifndef DISTILL_STUDENT_QAT_ONNX_NBITS_H_
#define DISTILL_STUDENT_QAT_ONNX_NBITS_H_

#include <torch/torch.h>

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "onnx/onnx_pb.h"
#include "student/qat/group_quant.h"

namespace distill::student::qat {

inline constexpr char kOnnxRuntimeDomain[] = "com.microsoft";

// Adds MatMulNBits from `input` (float [..., K]) to `output` (float
// [..., N]) for the Linear `weight` [N, K] quantized with `params`, and its
// initializers, named after `name`. A defined `bias` [N] is added after
// the product (an ONNX Add). The model needs the com.microsoft opset 1.
// InvalidArgument for bits other than 4 (ONNX Runtime 1.20's MatMulNBits
// runs only 4) and a group size that does not divide K.
absl::Status AddMatMulNBits(onnx::GraphProto* graph, const std::string& name,
                            const std::string& input, const std::string& output,
                            const torch::Tensor& weight,
                            const torch::Tensor& bias,
                            const GroupQuantParams& params,
                            const GroupQuantSpec& spec);

// The two halves of AddMatMulNBits, for a packed weight that more than one
// node reads (a head tied to the embedding): the initializers <name>.B,
// <name>.scales and, unless symmetric, <name>.zero_points (same errors);
// and a MatMulNBits node of N outputs and K inputs reading them.
absl::Status AddMatMulNBitsWeights(onnx::GraphProto* graph,
                                   const std::string& name,
                                   const torch::Tensor& weight,
                                   const GroupQuantParams& params,
                                   const GroupQuantSpec& spec);
void AddMatMulNBitsNode(onnx::GraphProto* graph, const std::string& name,
                        const std::string& input, const std::string& output,
                        int64_t n, int64_t k, const GroupQuantSpec& spec,
                        const torch::Tensor& bias);

// A model of one Linear: input "x" float [rows, K], output "y" float
// [rows, N], checked by ONNX's checker.
absl::StatusOr<onnx::ModelProto> MatMulNBitsLinearModel(
    const torch::Tensor& weight, const torch::Tensor& bias,
    const GroupQuantParams& params, const GroupQuantSpec& spec);

}  // namespace distill::student::qat

#endif  // DISTILL_STUDENT_QAT_ONNX_NBITS_H_
