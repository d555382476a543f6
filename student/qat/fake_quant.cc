#include "student/qat/fake_quant.h"

#include <algorithm>
#include <cmath>

namespace distill::student::qat {

float ScaleFromAmax(double amax) {
  if (!(amax > 0)) return kMinScale;
  return std::max(static_cast<float>(amax / kWeightQMax), kMinScale);
}

torch::Tensor ScalesFromAmax(const torch::Tensor& amax) {
  torch::Tensor a = torch::nan_to_num(amax.to(torch::kFloat64), 0.0);
  return (a / static_cast<double>(kWeightQMax))
      .to(torch::kFloat32)
      .clamp_min(kMinScale);
}

torch::Tensor PerChannelAmax(const torch::Tensor& weight) {
  return weight.detach().abs().reshape({weight.size(0), -1}).amax(1);
}

torch::Tensor FakeQuantActivation(const torch::Tensor& x, float scale) {
  return torch::fake_quantize_per_tensor_affine(x, scale, 0, kActivationQMin,
                                                kActivationQMax);
}

torch::Tensor FakeQuantWeight(const torch::Tensor& weight,
                              const torch::Tensor& scales) {
  const torch::Tensor zero_points =
      torch::zeros({scales.size(0)}, torch::kInt32);
  return torch::fake_quantize_per_channel_affine(
      weight, scales.to(torch::kFloat32), zero_points, /*axis=*/0, -kWeightQMax,
      kWeightQMax);
}

torch::Tensor QuantizeWeightInt8(const torch::Tensor& weight,
                                 const torch::Tensor& scales) {
  // Dividing the fake-quantized value by its scale recovers the integer
  // exactly, so the export holds precisely what the evaluation computed.
  torch::NoGradGuard no_grad;
  std::vector<int64_t> shape(weight.dim(), 1);
  shape[0] = -1;
  const torch::Tensor s = scales.to(torch::kFloat32).reshape(shape);
  return torch::round(FakeQuantWeight(weight.detach(), scales) / s)
      .clamp(-kWeightQMax, kWeightQMax)
      .to(torch::kInt8);
}

}  // namespace distill::student::qat
