// Batched matrix products on oneDNN. A language model's attention is two
// batched products per layer ([N, h, S, hd] x [N, h, hd, S] and back), and
// Debian's LibTorch runs torch::matmul / bmm over them one small system-BLAS
// call per head at 10-20 GFLOP/s on a 2-core AVX-512 machine; oneDNN's
// matmul primitive takes the whole batch, transposes included as strides,
// at 200-320 GFLOP/s (docs/BENCHMARKS.md). Thread-safe.
#ifndef DISTILL_COMMON_MATMUL_H_
#define DISTILL_COMMON_MATMUL_H_

#include <torch/torch.h>

namespace distill {

// alpha * (a @ b) over the last two dimensions: `a` [..., M, K], `b`
// [..., K, N] with equal leading dimensions, result [..., M, N] contiguous;
// differentiable in `a` and `b`. Any strides (a transposed view costs no
// copy). Float32 CPU tensors go through oneDNN's matmul primitive when the
// build found oneDNN and the fast path is on (SetFastLinear in
// common/linear.h); everything else through torch::matmul. Both give the
// same values and gradients up to float rounding (matmul_test).
torch::Tensor Matmul(const torch::Tensor& a, const torch::Tensor& b,
                     double alpha = 1.0);

// x @ weight^T + bias for a 2-D float32 CPU `x` [M, K], `weight` [N, K] and
// `bias` [N] or undefined, differentiable in all three: the product and the
// input and weight gradients on oneDNN's matmul primitive over LibTorch's
// dense tensors (no conversion to oneDNN layouts and back). Linear's fast
// path when OneDnnMatmulAvailable().
torch::Tensor OneDnnLinear(const torch::Tensor& x, const torch::Tensor& weight,
                           const torch::Tensor& bias);

// Whether this build can run Matmul on oneDNN at all.
bool OneDnnMatmulAvailable();

}  // namespace distill

#endif  // DISTILL_COMMON_MATMUL_H_
