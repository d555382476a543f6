#include "common/linear.h"

#include <ATen/Context.h>

#include <atomic>

#include "common/matmul.h"

namespace distill {
namespace {

std::atomic<bool> fast_linear{true};

}  // namespace

void SetFastLinear(bool enabled) { fast_linear = enabled; }
bool FastLinearEnabled() { return fast_linear; }

torch::Tensor Linear(const torch::Tensor& x, const torch::Tensor& weight,
                     const torch::Tensor& bias) {
  const bool fast = fast_linear && at::hasMKLDNN() &&
                    at::globalContext().userEnabledMkldnn() &&
                    x.device().is_cpu() && x.scalar_type() == torch::kFloat &&
                    weight.scalar_type() == torch::kFloat && x.numel() > 0 &&
                    x.dim() >= 1;
  if (!fast) return torch::linear(x, weight, bias);
  const int64_t in = x.size(-1);
  std::vector<int64_t> out_shape(x.sizes().begin(), x.sizes().end());
  out_shape.back() = weight.size(0);
  if (OneDnnMatmulAvailable()) {
    return OneDnnLinear(x.reshape({-1, in}), weight, bias).view(out_shape);
  }
  // mkldnn_linear takes a 2-D oneDNN input and dense weight and bias, and
  // its backward hands dense gradients to all three.
  const torch::Tensor input = x.reshape({-1, in}).contiguous().to_mkldnn();
  return at::mkldnn_linear(input, weight.contiguous(), bias)
      .to_dense()
      .view(out_shape);
}

}  // namespace distill
