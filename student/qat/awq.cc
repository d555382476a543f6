#include "student/qat/awq.h"

#include <limits>

namespace distill::student::qat {

torch::Tensor AwqFakeQuant(const torch::Tensor& weight,
                           const torch::Tensor& scales,
                           const GroupQuantSpec& spec) {
  const torch::Tensor s = scales.to(weight.scalar_type()).reshape({1, -1});
  const torch::Tensor scaled = weight * s;
  return FakeQuantGroupwise(scaled, GroupQuantParamsFromWeight(scaled, spec),
                            spec) /
         s;
}

AwqSearch SearchAwqScales(const torch::Tensor& weight,
                          const torch::Tensor& inputs,
                          const GroupQuantSpec& spec, int grid) {
  torch::NoGradGuard no_grad;
  TORCH_CHECK(weight.dim() == 2 && inputs.dim() == 2 &&
                  inputs.size(1) == weight.size(1) && grid >= 1,
              "AWQ needs a weight [out, in], inputs [rows, in] and a grid "
              ">= 1, got ",
              weight.sizes(), ", ", inputs.sizes(), ", ", grid);
  const torch::Tensor w = weight.detach().to(torch::kFloat32);
  const torch::Tensor x = inputs.detach().to(torch::kFloat32);
  const torch::Tensor reference = torch::matmul(x, w.t());
  const torch::Tensor activation = x.abs().mean(0).clamp_min(1e-8);
  auto error_of = [&](const torch::Tensor& scales) {
    return (torch::matmul(x, AwqFakeQuant(w, scales, spec).t()) - reference)
        .pow(2)
        .mean()
        .item<double>();
  };
  AwqSearch best;
  best.error = std::numeric_limits<double>::infinity();
  for (int i = 0; i <= grid; ++i) {
    const double alpha = static_cast<double>(i) / grid;
    torch::Tensor s = activation.pow(alpha);
    s = s / (s.max() * s.min()).sqrt();
    const double error = error_of(s);
    if (i == 0) best.rtn_error = error;
    if (error < best.error) {
      best.error = error;
      best.alpha = alpha;
      best.scales = s;
    }
  }
  return best;
}

}  // namespace distill::student::qat
