#include "student/qat/fake_quant.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>

namespace distill::student::qat {
namespace {

TEST(FakeQuantTest, ScaleIsAmaxOver127AndNeverZero) {
  EXPECT_FLOAT_EQ(ScaleFromAmax(12.7), 0.1f);
  EXPECT_FLOAT_EQ(ScaleFromAmax(1.0), 1.0f / 127);
  EXPECT_EQ(ScaleFromAmax(0), kMinScale);
  EXPECT_EQ(ScaleFromAmax(-3), kMinScale);
  EXPECT_EQ(ScaleFromAmax(std::nan("")), kMinScale);
}

// Expected values by hand: scale 0.1, levels -128..127, so the range is
// [-12.8, 12.7]; x = -12.9 rounds to level -129 (outside: clipped, no
// gradient), 13.0 to 130 (clipped, no gradient), 0.26 to 3.
TEST(FakeQuantTest, ActivationForwardRoundsAndClipsBackwardIsStraightThrough) {
  torch::Tensor x = torch::tensor({0.04f, 0.26f, -12.8f, -12.9f, 12.7f, 13.0f},
                                  torch::requires_grad());
  torch::Tensor y = FakeQuantActivation(x, 0.1f);
  const std::vector<float> expected = {0.0f,   0.3f,  -12.8f,
                                       -12.8f, 12.7f, 12.7f};
  for (size_t i = 0; i < expected.size(); ++i) {
    EXPECT_NEAR(y[i].item<float>(), expected[i], 1e-6) << i;
  }
  y.sum().backward();
  const std::vector<float> grad = {1, 1, 1, 0, 1, 0};
  for (size_t i = 0; i < grad.size(); ++i) {
    EXPECT_EQ(x.grad()[i].item<float>(), grad[i]) << i;
  }
}

// Row 0 has scale 0.1 (levels -127..127: [-12.7, 12.7]), row 1 scale 0.01.
TEST(FakeQuantTest, WeightsArePerChannelNarrowRangeWithStraightThroughGrad) {
  torch::Tensor w =
      torch::tensor({{0.26f, -13.0f}, {0.014f, 1.5f}}, torch::requires_grad());
  torch::Tensor scales = torch::tensor({0.1f, 0.01f});
  torch::Tensor y = FakeQuantWeight(w, scales);
  EXPECT_NEAR(y[0][0].item<float>(), 0.3f, 1e-6);
  EXPECT_NEAR(y[0][1].item<float>(), -12.7f, 1e-6);
  EXPECT_NEAR(y[1][0].item<float>(), 0.01f, 1e-7);
  EXPECT_NEAR(y[1][1].item<float>(), 1.27f, 1e-6);
  y.sum().backward();
  EXPECT_TRUE(
      torch::equal(w.grad(), torch::tensor({{1.0f, 0.0f}, {1.0f, 0.0f}})));

  torch::Tensor q = QuantizeWeightInt8(w, scales);
  EXPECT_EQ(q.scalar_type(), torch::kInt8);
  EXPECT_TRUE(
      torch::equal(q, torch::tensor({{3, -127}, {1, 127}}, torch::kInt8)));
}

TEST(FakeQuantTest, DeadChannelGetsAPositiveScaleAndStaysZero) {
  torch::Tensor w = torch::zeros({3, 2, 3, 3});
  w[1] = torch::full({2, 3, 3}, -0.5);
  w[2][0][0][0] = 2.54;
  torch::Tensor amax = PerChannelAmax(w);
  EXPECT_TRUE(torch::equal(amax, torch::tensor({0.0f, 0.5f, 2.54f})));
  torch::Tensor scales = ScalesFromAmax(amax);
  EXPECT_GT(scales.min().item<float>(), 0.0f);
  EXPECT_EQ(scales[0].item<float>(), kMinScale);
  EXPECT_FLOAT_EQ(scales[2].item<float>(), 0.02f);
  torch::Tensor y = FakeQuantWeight(w, scales);
  EXPECT_TRUE(torch::isfinite(y).all().item<bool>());
  EXPECT_EQ(y[0].abs().max().item<float>(), 0.0f);
  EXPECT_FLOAT_EQ(y[2][0][0][0].item<float>(), 2.54f);
}

}  // namespace
}  // namespace distill::student::qat
