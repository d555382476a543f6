// Symmetric INT8 fake quantization (quantize, then dequantize, in float) as
// TensorRT and ONNX Runtime's QDQ path define it: zero point 0, activations
// per tensor in [-128, 127], weights per output channel (axis 0) in
// [-127, 127]. Gradients are straight-through inside the representable
// range and zero outside it (LibTorch's fake-quantize kernels). Stateless
// and thread-safe; the tensor functions throw c10::Error like any LibTorch
// call, so callers run them inside their TorchCall boundary.
#ifndef DISTILL_STUDENT_QAT_FAKE_QUANT_H_
#define DISTILL_STUDENT_QAT_FAKE_QUANT_H_

#include <torch/torch.h>

#include <cstdint>

namespace distill::student::qat {

inline constexpr int64_t kActivationQMin = -128;
inline constexpr int64_t kActivationQMax = 127;
// Weights use the narrow range, so -w quantizes to exactly -q(w).
inline constexpr int64_t kWeightQMax = 127;
// The smallest scale ever produced: a dead channel (all zeros) or an
// all-zero activation still gets a positive scale, which ONNX Runtime and
// TensorRT require.
inline constexpr float kMinScale = 1e-8f;

// amax / 127 rounded to float32 (the precision ONNX stores), at least
// kMinScale; a NaN or negative amax gives kMinScale.
float ScaleFromAmax(double amax);
// Elementwise ScaleFromAmax of a float tensor (per-channel amax).
torch::Tensor ScalesFromAmax(const torch::Tensor& amax);

// max |w| over every dimension but the first: one value per output channel.
torch::Tensor PerChannelAmax(const torch::Tensor& weight);

// Per-tensor activation fake quantization with `scale` > 0.
torch::Tensor FakeQuantActivation(const torch::Tensor& x, float scale);
// Per-channel (axis 0) weight fake quantization; `scales` is float [C_out].
torch::Tensor FakeQuantWeight(const torch::Tensor& weight,
                              const torch::Tensor& scales);
// The INT8 values FakeQuantWeight represents: round(w / s) clipped to
// [-127, 127], as an int8 tensor of the weight's shape.
torch::Tensor QuantizeWeightInt8(const torch::Tensor& weight,
                                 const torch::Tensor& scales);

}  // namespace distill::student::qat

#endif  // DISTILL_STUDENT_QAT_FAKE_QUANT_H_
