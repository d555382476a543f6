// Folding a BatchNorm into the Conv2d or Linear that feeds it: with
// k = gamma / sqrt(var + eps) per output channel,
//   w' = w * k,   b' = beta + (b - mean) * k,
// so conv(x, w', b') == bn(conv(x, w, b)) for the statistics (mean, var)
// used. Differentiable in every input (the QAT stage folds batch
// statistics and lets gradients flow through them). Stateless.
#ifndef DISTILL_STUDENT_QAT_BN_FOLD_H_
#define DISTILL_STUDENT_QAT_BN_FOLD_H_

#include <torch/torch.h>

namespace distill::student::qat {

struct BatchNormStats {
  torch::Tensor gamma;  // [C_out]; undefined means 1 (affine=false)
  torch::Tensor beta;   // [C_out]; undefined means 0
  torch::Tensor mean;   // [C_out]
  torch::Tensor var;    // [C_out], biased
  double eps = 1e-5;
};

struct FoldedWeights {
  torch::Tensor weight;
  torch::Tensor bias;  // always defined, [C_out]
};

// `bias` may be undefined (a conv without bias). Throws c10::Error on shape
// mismatches.
FoldedWeights FoldBatchNorm(const torch::Tensor& weight,
                            const torch::Tensor& bias,
                            const BatchNormStats& bn);

}  // namespace distill::student::qat

#endif  // DISTILL_STUDENT_QAT_BN_FOLD_H_
