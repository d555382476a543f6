// Linear layers on oneDNN. Debian's LibTorch runs torch::linear / matmul
// through the system BLAS (~35 GFLOP/s on a 2-core AVX-512 machine) while
// oneDNN reaches several times that; a language model is nearly all
// linear layers, so its forward and backward go through Linear() below.
// The fast path is oneDNN's matmul primitive on LibTorch's dense tensors
// (common/matmul.h: forward, input and weight gradients, no layout
// conversions); a build without oneDNN's headers uses LibTorch's own
// mkldnn_linear op, whose autograd formula stays on oneDNN too.
// Thread-safe.
#ifndef DISTILL_COMMON_LINEAR_H_
#define DISTILL_COMMON_LINEAR_H_

#include <torch/torch.h>

namespace distill {

// x W^T + b over the last dimension of `x` ([..., in] with `weight`
// [out, in] and `bias` [out] or undefined), differentiable in all three.
// Runs on oneDNN for float32 CPU tensors when LibTorch has it and the fast
// path is enabled, else torch::linear; both give the same values and
// gradients up to float rounding (linear_test).
torch::Tensor Linear(const torch::Tensor& x, const torch::Tensor& weight,
                     const torch::Tensor& bias = {});

// Turns the oneDNN paths of Linear and Matmul (common/matmul.h) on or off
// for the whole process (default: on), for the equality tests and for
// benchmarks that compare the two.
void SetFastLinear(bool enabled);
bool FastLinearEnabled();

}  // namespace distill

#endif  // DISTILL_COMMON_LINEAR_H_
