#include "student/qat/bn_fold.h"

#include <gtest/gtest.h>

namespace distill::student::qat {
namespace {

// By hand: k = 3 / sqrt(3 + 1) = 1.5; w' = 2 * 1.5 = 3;
// b' = 0.5 + (1 - 1) * 1.5 = 0.5; with no bias b' = 0.5 - 1.5 = -1.
TEST(BnFoldTest, ScalarByHand) {
  BatchNormStats bn{torch::tensor({3.0f}), torch::tensor({0.5f}),
                    torch::tensor({1.0f}), torch::tensor({3.0f}), 1.0};
  FoldedWeights f =
      FoldBatchNorm(torch::tensor({{2.0f}}), torch::tensor({1.0f}), bn);
  EXPECT_FLOAT_EQ(f.weight.item<float>(), 3.0f);
  EXPECT_FLOAT_EQ(f.bias.item<float>(), 0.5f);
  FoldedWeights no_bias =
      FoldBatchNorm(torch::tensor({{2.0f}}), torch::Tensor(), bn);
  EXPECT_FLOAT_EQ(no_bias.bias.item<float>(), -1.0f);
}

void Randomize(torch::nn::Module& bn) {
  torch::NoGradGuard no_grad;
  for (auto& p : bn.named_parameters()) p.value().uniform_(0.5, 1.5);
  for (auto& b : bn.named_buffers()) {
    if (b.key() == "running_mean") b.value().normal_(0, 0.5);
    if (b.key() == "running_var") b.value().uniform_(0.2, 2.0);
  }
}

// The folded conv in eval equals LibTorch's Conv2d followed by BatchNorm2d
// in eval (running statistics).
TEST(BnFoldTest, FoldedConvEqualsConvThenBatchNormInEval) {
  torch::manual_seed(3);
  torch::nn::Conv2d conv(torch::nn::Conv2dOptions(3, 5, 3).padding(1));
  torch::nn::BatchNorm2d bn(5);
  Randomize(*bn);
  conv->eval();
  bn->eval();
  torch::Tensor x = torch::randn({4, 3, 8, 8});
  torch::NoGradGuard no_grad;
  torch::Tensor expected = bn(conv(x));
  FoldedWeights f = FoldBatchNorm(conv->weight, conv->bias,
                                  {bn->weight, bn->bias, bn->running_mean,
                                   bn->running_var, bn->options.eps()});
  torch::Tensor got = torch::conv2d(x, f.weight, f.bias, 1, 1);
  EXPECT_LT((got - expected).abs().max().item<float>(), 1e-5);
}

TEST(BnFoldTest, FoldedLinearEqualsLinearThenBatchNorm1dInEval) {
  torch::manual_seed(4);
  torch::nn::Linear linear(6, 4);
  torch::nn::BatchNorm1d bn(4);
  Randomize(*bn);
  linear->eval();
  bn->eval();
  torch::Tensor x = torch::randn({5, 6});
  torch::NoGradGuard no_grad;
  torch::Tensor expected = bn(linear(x));
  FoldedWeights f = FoldBatchNorm(linear->weight, linear->bias,
                                  {bn->weight, bn->bias, bn->running_mean,
                                   bn->running_var, bn->options.eps()});
  EXPECT_LT(
      (torch::linear(x, f.weight, f.bias) - expected).abs().max().item<float>(),
      1e-5);
}

}  // namespace
}  // namespace distill::student::qat
