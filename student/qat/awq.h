// Activation-aware weight scaling for group-wise quantization (AWQ's idea,
// Lin et al. 2023): the input channels with the largest activations carry
// most of a Linear's output, so scale their weight columns up before
// quantizing (finer steps where it matters) and divide the activations by
// the same factors, which leaves the float product unchanged. The factors
// are s_j = a_j^α with a_j the mean |x_j| over calibration rows, normalized
// so that max(s) · min(s) = 1, and α is searched on a grid in [0, 1] for
// the smallest output error on those rows. α = 0 is plain round-to-nearest,
// so the search never does worse than RTN on its calibration rows.
// The divided activations are the exporter's business: folded into the
// LayerNorm before the layer or a Mul in front of it.
#ifndef DISTILL_STUDENT_QAT_AWQ_H_
#define DISTILL_STUDENT_QAT_AWQ_H_

#include <torch/torch.h>

#include "student/qat/group_quant.h"

namespace distill::student::qat {

struct AwqSearch {
  torch::Tensor scales;  // float [in], > 0; all 1 when α = 0
  double alpha = 0;
  // Mean squared output error on the calibration rows, of the chosen
  // scaling and of plain round-to-nearest (α = 0).
  double error = 0;
  double rtn_error = 0;
};

// `weight` float [out, in]; `inputs` float [rows, in], the layer's inputs
// on calibration data; `grid` + 1 values of α, 0 to 1. Throws c10::Error
// on shapes that do not fit, like any LibTorch call.
AwqSearch SearchAwqScales(const torch::Tensor& weight,
                          const torch::Tensor& inputs,
                          const GroupQuantSpec& spec, int grid = 20);

// The weight the layer computes with under `scales`:
// FakeQuantGroupwise(W · diag(s)) · diag(1 / s), parameters by
// round-to-nearest on the scaled weight.
torch::Tensor AwqFakeQuant(const torch::Tensor& weight,
                           const torch::Tensor& scales,
                           const GroupQuantSpec& spec);

}  // namespace distill::student::qat

#endif  // DISTILL_STUDENT_QAT_AWQ_H_
