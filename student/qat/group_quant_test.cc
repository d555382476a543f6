#include "student/qat/group_quant.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstdint>
#include <vector>

#include "common/testing/status_matchers.h"

namespace distill::student::qat {
namespace {

using ::distill::testing::IsOk;
using ::distill::testing::StatusIs;

std::vector<float> Floats(const torch::Tensor& t) {
  const torch::Tensor c = t.detach().to(torch::kFloat32).contiguous();
  return std::vector<float>(c.data_ptr<float>(),
                            c.data_ptr<float>() + c.numel());
}

std::vector<int> Ints(const torch::Tensor& t) {
  const torch::Tensor c = t.to(torch::kInt32).contiguous();
  return std::vector<int>(c.data_ptr<int>(), c.data_ptr<int>() + c.numel());
}

// One row, two groups of 32. Group 0: max |w| = 1.4, so the scale is
// 1.4 / 7 = 0.2 and the codes are round(w / 0.2) + 8: 1.4 -> 15, -0.66 ->
// 5 (-3.3 rounds to -3), 0.2 -> 9, 0.05 -> 8 (0.25 rounds to 0). Group 1:
// max |w| = 0.35, scale 0.05: -0.35 -> 1.
TEST(GroupQuantTest, SymmetricFourBitsByHand) {
  torch::Tensor w = torch::zeros({1, 64});
  w[0][0] = 1.4;
  w[0][1] = -0.66;
  w[0][2] = 0.2;
  w[0][3] = 0.05;
  w[0][32] = -0.35;
  const GroupQuantSpec spec{4, 32, true};
  const GroupQuantParams p = GroupQuantParamsFromWeight(w, spec);
  ASSERT_EQ(p.scales.sizes(), (std::vector<int64_t>{1, 2}));
  EXPECT_FLOAT_EQ(p.scales[0][0].item<float>(), 0.2f);
  EXPECT_FLOAT_EQ(p.scales[0][1].item<float>(), 0.05f);
  EXPECT_EQ(Ints(p.zero_points), (std::vector<int>{8, 8}));

  const std::vector<float> fq = Floats(FakeQuantGroupwise(w, p, spec));
  EXPECT_NEAR(fq[0], 1.4, 1e-6);
  EXPECT_NEAR(fq[1], -0.6, 1e-6);
  EXPECT_NEAR(fq[2], 0.2, 1e-6);
  EXPECT_NEAR(fq[3], 0.0, 1e-6);
  EXPECT_NEAR(fq[32], -0.35, 1e-6);
  EXPECT_NEAR(fq[33], 0.0, 1e-6);

  const std::vector<int> codes = Ints(QuantizeGroupwise(w, p, spec));
  EXPECT_EQ(std::vector<int>(codes.begin(), codes.begin() + 5),
            (std::vector<int>{15, 5, 9, 8, 8}));
  EXPECT_EQ(codes[32], 1);
  EXPECT_EQ(codes[63], 8);
}

// The group's range [-0.3, 1.2] spans the 16 codes: scale 1.5 / 15 = 0.1,
// zero point round(0.3 / 0.1) = 3. 1.2 -> 15, -0.3 -> 0, 0.44 -> 7 (0.4),
// 0 -> 3 (exactly 0).
TEST(GroupQuantTest, AsymmetricFourBitsByHand) {
  torch::Tensor w = torch::zeros({1, 32});
  w[0][0] = 1.2;
  w[0][1] = -0.3;
  w[0][2] = 0.44;
  const GroupQuantSpec spec{4, 32, false};
  const GroupQuantParams p = GroupQuantParamsFromWeight(w, spec);
  EXPECT_NEAR(p.scales[0][0].item<float>(), 0.1, 1e-7);
  EXPECT_EQ(p.zero_points[0][0].item<int>(), 3);
  const std::vector<float> fq = Floats(FakeQuantGroupwise(w, p, spec));
  EXPECT_NEAR(fq[0], 1.2, 1e-6);
  EXPECT_NEAR(fq[1], -0.3, 1e-6);
  EXPECT_NEAR(fq[2], 0.4, 1e-6);
  EXPECT_EQ(fq[3], 0.0f);
  const std::vector<int> codes = Ints(QuantizeGroupwise(w, p, spec));
  EXPECT_EQ(std::vector<int>(codes.begin(), codes.begin() + 4),
            (std::vector<int>{15, 0, 7, 3}));
}

// With scale 0.1 and zero point 8 (codes 0..15 hold -0.8 .. 0.7): 1.0 and
// -0.9 are clipped (gradient 0), 0.3, -0.8 and 0 pass (gradient 1, times
// the 2 of the sum below).
TEST(GroupQuantTest, StraightThroughGradientIsZeroWhereClipped) {
  torch::Tensor w = torch::zeros({1, 32});
  w[0][0] = 1.0;
  w[0][1] = 0.3;
  w[0][2] = -0.9;
  w[0][3] = -0.8;
  w.set_requires_grad(true);
  GroupQuantParams p;
  p.scales = torch::full({1, 1}, 0.1f);
  p.zero_points = torch::full({1, 1}, 8, torch::kInt32);
  const GroupQuantSpec spec{4, 32, true};
  const torch::Tensor fq = FakeQuantGroupwise(w, p, spec);
  (2 * fq).sum().backward();
  const std::vector<float> grad = Floats(w.grad());
  EXPECT_EQ(std::vector<float>(grad.begin(), grad.begin() + 5),
            (std::vector<float>{0, 2, 0, 2, 2}));
  const std::vector<float> values = Floats(fq);
  EXPECT_NEAR(values[0], 0.7, 1e-6);   // clipped to code 15
  EXPECT_NEAR(values[2], -0.8, 1e-6);  // clipped to code 0
}

// Codes 0, 1, ..., 15, 0, 1, ... in row 0 and 15, 14, ... in row 1, packed
// two a byte, the first in the low nibble; zero points likewise per row.
TEST(GroupQuantTest, MatMulNBitsLayoutAgainstHandPackedBytes) {
  const GroupQuantSpec spec{4, 32, false};
  const torch::Tensor k = torch::arange(96, torch::kInt32) % 16;
  const torch::Tensor codes = torch::stack({k, 15 - k}).to(torch::kUInt8);
  GroupQuantParams p;
  p.scales = torch::tensor({{1.f, 2.f, 3.f}, {4.f, 5.f, 6.f}});
  p.zero_points = torch::tensor({{1, 2, 3}, {15, 0, 7}}, torch::kInt32);
  const MatMulNBitsWeights packed = PackMatMulNBits(codes, p, spec);
  ASSERT_EQ(packed.b.sizes(), (std::vector<int64_t>{2, 3, 16}));
  ASSERT_EQ(packed.b.scalar_type(), torch::kUInt8);
  const std::vector<int> up = {0x10, 0x32, 0x54, 0x76, 0x98, 0xBA, 0xDC, 0xFE};
  const std::vector<int> down = {0xEF, 0xCD, 0xAB, 0x89,
                                 0x67, 0x45, 0x23, 0x01};
  for (int64_t block = 0; block < 3; ++block) {
    const std::vector<int> row0 = Ints(packed.b[0][block]);
    const std::vector<int> row1 = Ints(packed.b[1][block]);
    for (int i = 0; i < 16; ++i) {
      EXPECT_EQ(row0[i], up[i % 8]) << "block " << block << " byte " << i;
      EXPECT_EQ(row1[i], down[i % 8]) << "block " << block << " byte " << i;
    }
  }
  EXPECT_EQ(Floats(packed.scales), (std::vector<float>{1, 2, 3, 4, 5, 6}));
  // Row 0: 1 | 2 << 4, then 3 and a padding nibble; row 1: 15 | 0 << 4, 7.
  EXPECT_EQ(Ints(packed.zero_points),
            (std::vector<int>{0x21, 0x03, 0x0F, 0x07}));

  // A symmetric spec has no zero points (MatMulNBits' default, 8).
  EXPECT_FALSE(PackMatMulNBits(codes, p, {4, 32, true}).zero_points.defined());

  // 8 bits: one code a byte, as they are.
  const MatMulNBitsWeights eight = PackMatMulNBits(codes, p, {8, 32, false});
  ASSERT_EQ(eight.b.sizes(), (std::vector<int64_t>{2, 3, 32}));
  EXPECT_EQ(Ints(eight.b[1][2]).front(), 15 - (64 % 16));
  EXPECT_EQ(Ints(eight.zero_points), (std::vector<int>{1, 2, 3, 15, 0, 7}));
}

TEST(GroupQuantTest, BadSettingsAreRefused) {
  EXPECT_THAT(CheckGroupQuantSpec({4, 128, true}), IsOk());
  EXPECT_THAT(CheckGroupQuantSpec({8, 32, false}), IsOk());
  EXPECT_THAT(CheckGroupQuantSpec({3, 128, true}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "weight bits must be 4 or 8, got 3"));
  EXPECT_THAT(CheckGroupQuantSpec({4, 48, true}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "group size must be 32, 64 or 128, got 48"));
  EXPECT_THAT(CheckGroupQuantFits({4, 64, true}, "blocks.0.mlp.fc1", 128),
              IsOk());
  EXPECT_THAT(CheckGroupQuantFits({4, 64, true}, "blocks.0.mlp.fc1", 100),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "group size 64 does not divide the input width 100 "
                       "of layer 'blocks.0.mlp.fc1'"));
}

}  // namespace
}  // namespace distill::student::qat
