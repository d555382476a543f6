// Group-wise (block-wise) weight quantization, the form language models ship
// in below 8 bits: each row of a Linear's weight [out, in] is split along
// `in` into groups of `group_size` inputs, and each group gets one scale and
// one zero point; a weight is stored as a code of `bits` bits and read back
// as (code - zero_point) * scale. That is what ONNX Runtime's MatMulNBits
// computes (com.microsoft domain), so PackMatMulNBits hands it the codes as
// they are. Gradients of the fake quantization are straight-through where
// the code was not clipped and zero where it was (LibTorch's fake-quantize
// kernels). Stateless and thread-safe; the tensor functions throw c10::Error
// like any LibTorch call, so callers run them inside their TorchCall
// boundary.
#ifndef DISTILL_STUDENT_QAT_GROUP_QUANT_H_
#define DISTILL_STUDENT_QAT_GROUP_QUANT_H_

#include <torch/torch.h>

#include <cstdint>
#include <string>

#include "absl/status/status.h"

namespace distill::student::qat {

struct GroupQuantSpec {
  // 4 or 8.
  int bits = 4;
  // Inputs per group: 32, 64 or 128 (MatMulNBits takes powers of two >= 16).
  int64_t group_size = 128;
  // Symmetric: every zero point is 2^(bits - 1) (MatMulNBits' default, so
  // the export needs none) and scale = max |w| / (2^(bits - 1) - 1).
  // Otherwise each group's range [min(w, 0), max(w, 0)] spans the codes
  // 0 .. 2^bits - 1 with a zero point of its own.
  bool symmetric = true;
};

// InvalidArgument naming the setting: bits other than 4 or 8, a group size
// other than 32, 64 or 128.
absl::Status CheckGroupQuantSpec(const GroupQuantSpec& spec);
// InvalidArgument when the group size does not divide the layer's input
// width.
absl::Status CheckGroupQuantFits(const GroupQuantSpec& spec,
                                 const std::string& layer, int64_t in_features);

struct GroupQuantParams {
  torch::Tensor scales;       // float [out, in / group_size], all > 0
  torch::Tensor zero_points;  // int32 [out, in / group_size], in the codes
};

// Round-to-nearest parameters from each group's own values (see
// GroupQuantSpec). A group of zeros gets kMinScale.
GroupQuantParams GroupQuantParamsFromWeight(const torch::Tensor& weight,
                                            const GroupQuantSpec& spec);

// (clamp(round(w / s) + z, 0, 2^bits - 1) - z) * s per group, with the
// straight-through gradient. `weight` is float [out, in].
torch::Tensor FakeQuantGroupwise(const torch::Tensor& weight,
                                 const GroupQuantParams& params,
                                 const GroupQuantSpec& spec);

// The codes FakeQuantGroupwise represents: uint8 [out, in].
torch::Tensor QuantizeGroupwise(const torch::Tensor& weight,
                                const GroupQuantParams& params,
                                const GroupQuantSpec& spec);

// ONNX Runtime's MatMulNBits inputs for a weight [N, K] = [out, in]
// (Y = A · dequant(B)ᵀ): B uint8 [N, K / group_size, group_size · bits / 8]
// with each row's codes packed low bits first along K (two 4-bit codes a
// byte, the first in the low nibble); scales float [N · K / group_size];
// zero points uint8, each row's packed like the codes and padded to a whole
// byte: [N · ceil(K / group_size · bits / 8)]. Undefined zero points for a
// symmetric spec.
struct MatMulNBitsWeights {
  torch::Tensor b;
  torch::Tensor scales;
  torch::Tensor zero_points;
};
MatMulNBitsWeights PackMatMulNBits(const torch::Tensor& codes,
                                   const GroupQuantParams& params,
                                   const GroupQuantSpec& spec);

}  // namespace distill::student::qat

#endif  // DISTILL_STUDENT_QAT_GROUP_QUANT_H_
