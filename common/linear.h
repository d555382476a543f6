// Linear layers on oneDNN. Debian's LibTorch runs torch::linear / matmul
// through the system BLAS (~30 GFLOP/s on a 2-core AVX-512 machine) while
// its bundled oneDNN inner product reaches several times that; a language
// model is nearly all linear layers, so its forward and backward go through
// Linear() below. The fast path is LibTorch's own mkldnn_linear op, whose
// autograd formula computes the input, weight and bias gradients on oneDNN
// too. Thread-safe.
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

// Turns the oneDNN path on or off for the whole process (default: on), for
// the equality test and for benchmarks that compare the two.
void SetFastLinear(bool enabled);
bool FastLinearEnabled();

}  // namespace distill

#endif  // DISTILL_COMMON_LINEAR_H_
