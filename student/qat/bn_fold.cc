#include "student/qat/bn_fold.h"

#include <vector>

namespace distill::student::qat {

FoldedWeights FoldBatchNorm(const torch::Tensor& weight,
                            const torch::Tensor& bias,
                            const BatchNormStats& bn) {
  torch::Tensor k = torch::rsqrt(bn.var + bn.eps);
  if (bn.gamma.defined()) k = k * bn.gamma;
  std::vector<int64_t> shape(weight.dim(), 1);
  shape[0] = -1;
  FoldedWeights out;
  out.weight = weight * k.reshape(shape);
  torch::Tensor b = bias.defined() ? bias - bn.mean : -bn.mean;
  out.bias = b * k;
  if (bn.beta.defined()) out.bias = out.bias + bn.beta;
  return out;
}

}  // namespace distill::student::qat
