#include "student/qat/awq.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstdio>

namespace distill::student::qat {
namespace {

// Inputs whose channel 5 is 40 times as large as the others: RTN gives that
// channel's weights the same steps as the rest, AWQ-style scaling finer
// ones. The errors are measured here against the float product, not taken
// from the search.
TEST(AwqTest, ScalingTheHotChannelBeatsRoundToNearest) {
  torch::manual_seed(11);
  const torch::Tensor w = torch::randn({32, 64});
  torch::Tensor x = torch::randn({256, 64});
  x.select(1, 5).mul_(40);
  const GroupQuantSpec spec{4, 32, true};
  const AwqSearch search = SearchAwqScales(w, x, spec);

  const torch::Tensor reference = torch::matmul(x, w.t());
  auto error_of = [&](const torch::Tensor& dequantized) {
    return (torch::matmul(x, dequantized.t()) - reference)
        .pow(2)
        .mean()
        .item<double>();
  };
  const double rtn = error_of(
      FakeQuantGroupwise(w, GroupQuantParamsFromWeight(w, spec), spec));
  const double awq = error_of(AwqFakeQuant(w, search.scales, spec));
  EXPECT_NEAR(search.rtn_error, rtn, 1e-6 * rtn);
  EXPECT_NEAR(search.error, awq, 1e-6 * awq);
  std::printf("output MSE: RTN %.4g, AWQ-style %.4g (alpha %.2f)\n", rtn, awq,
              search.alpha);
  EXPECT_LT(awq, 0.7 * rtn);
  EXPECT_GT(search.alpha, 0);
  // The hot channel got the largest factor.
  EXPECT_EQ(search.scales.argmax().item<int64_t>(), 5);
}

// Inputs of equal size in every channel: nothing to protect, every α gives
// the same factors (all 1 after normalization) and RTN's error.
TEST(AwqTest, EvenActivationsLeaveTheWeightAsRoundToNearest) {
  torch::manual_seed(12);
  const torch::Tensor w = torch::randn({8, 32});
  const torch::Tensor x = torch::ones({4, 32});
  const GroupQuantSpec spec{4, 32, false};
  const AwqSearch search = SearchAwqScales(w, x, spec, 4);
  EXPECT_TRUE(torch::allclose(search.scales, torch::ones({32})));
  EXPECT_DOUBLE_EQ(search.error, search.rtn_error);
}

}  // namespace
}  // namespace distill::student::qat
