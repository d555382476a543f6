#include "data/augment.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstdint>

namespace distill::data {
namespace {

using ::testing::ElementsAre;

constexpr float kPad = -0.81f;

// Distinct values everywhere, so any crop offset or flip shows.
torch::Tensor Inputs(int64_t n) {
  return torch::arange(n * 2 * 6 * 5, torch::kFloat).reshape({n, 2, 6, 5});
}

torch::Tensor Ids(int64_t n) {
  return torch::arange(100, 100 + n, torch::kLong);
}

AugmentOptions Enabled(int64_t padding, bool flip) {
  AugmentOptions options;
  options.enabled = true;
  options.crop_padding = padding;
  options.horizontal_flip = flip;
  return options;
}

TEST(AugmentTest, DisabledReturnsInputUnchanged) {
  const torch::Tensor inputs = Inputs(4);
  AugmentOptions options;
  ASSERT_FALSE(options.enabled);
  EXPECT_TRUE(
      torch::equal(Augment(inputs, Ids(4), 1, 0, options, kPad), inputs));
}

TEST(AugmentTest, SameSeedEpochAndIdGiveSameResult) {
  const torch::Tensor inputs = Inputs(16);
  const AugmentOptions options = Enabled(2, true);
  const torch::Tensor a = Augment(inputs, Ids(16), 7, 3, options, kPad);
  const torch::Tensor b = Augment(inputs, Ids(16), 7, 3, options, kPad);
  EXPECT_TRUE(torch::equal(a, b));
  EXPECT_FALSE(torch::equal(a, inputs));
}

TEST(AugmentTest, DependsOnIdNotOnPositionInBatch) {
  const torch::Tensor inputs = Inputs(8);
  const torch::Tensor ids = Ids(8);
  const AugmentOptions options = Enabled(2, true);
  const torch::Tensor whole = Augment(inputs, ids, 7, 3, options, kPad);
  const torch::Tensor reversed_idx = torch::arange(7, -1, -1, torch::kLong);
  const torch::Tensor reversed =
      Augment(inputs.index_select(0, reversed_idx),
              ids.index_select(0, reversed_idx), 7, 3, options, kPad);
  EXPECT_TRUE(torch::equal(reversed, whole.index_select(0, reversed_idx)));
}

TEST(AugmentTest, OtherEpochOrSeedGivesOtherResult) {
  const torch::Tensor inputs = Inputs(16);
  const AugmentOptions options = Enabled(2, true);
  const torch::Tensor a = Augment(inputs, Ids(16), 7, 3, options, kPad);
  EXPECT_FALSE(torch::equal(a, Augment(inputs, Ids(16), 7, 4, options, kPad)));
  EXPECT_FALSE(torch::equal(a, Augment(inputs, Ids(16), 8, 3, options, kPad)));
}

TEST(AugmentTest, FlipOnlyGivesInputOrItsMirror) {
  const int64_t n = 32;
  const torch::Tensor inputs = Inputs(n);
  const torch::Tensor out =
      Augment(inputs, Ids(n), 11, 0, Enabled(0, true), kPad);
  ASSERT_THAT(out.sizes(), ElementsAre(n, 2, 6, 5));
  int flipped = 0;
  for (int64_t i = 0; i < n; ++i) {
    const bool same = torch::equal(out[i], inputs[i]);
    const bool mirror = torch::equal(out[i], inputs[i].flip({2}));
    EXPECT_TRUE(same || mirror) << "sample " << i;
    flipped += mirror;
  }
  // Both outcomes occur: P(all 32 alike) = 2^-31.
  EXPECT_GT(flipped, 0);
  EXPECT_LT(flipped, n);
}

TEST(AugmentTest, CropKeepsShapeAndPadsWithPadValue) {
  const int64_t n = 64;
  const int64_t pad = 2;
  const torch::Tensor inputs = Inputs(n);  // all values >= 0 != kPad
  const torch::Tensor out =
      Augment(inputs, Ids(n), 5, 1, Enabled(pad, false), kPad);
  ASSERT_THAT(out.sizes(), ElementsAre(n, 2, 6, 5));
  bool some_shifted = false;
  for (int64_t i = 0; i < n; ++i) {
    // Recover the offset from where the input's top-left value landed; the
    // crop must be the padded input at exactly that offset.
    const torch::Tensor padded =
        torch::constant_pad_nd(inputs[i], {pad, pad, pad, pad}, kPad);
    bool matched = false;
    for (int64_t top = 0; top <= 2 * pad && !matched; ++top) {
      for (int64_t left = 0; left <= 2 * pad && !matched; ++left) {
        if (torch::equal(out[i], padded.narrow(1, top, 6).narrow(2, left, 5))) {
          matched = true;
          some_shifted |= top != pad || left != pad;
        }
      }
    }
    EXPECT_TRUE(matched) << "sample " << i << " is no crop of its padding";
    // Every value is either from the input or the pad value.
    const torch::Tensor is_pad = out[i] == kPad;
    const torch::Tensor from_input = out[i] >= 0;
    EXPECT_TRUE(torch::logical_or(is_pad, from_input).all().item<bool>());
  }
  EXPECT_TRUE(some_shifted);
}

TEST(AugmentTest, ShiftedCropExposesPadValue) {
  // A constant image makes the pad border count exact for a known shift.
  const int64_t n = 64;
  const torch::Tensor inputs = torch::ones({n, 1, 4, 4});
  const torch::Tensor out =
      Augment(inputs, Ids(n), 3, 0, Enabled(1, false), kPad);
  for (int64_t i = 0; i < n; ++i) {
    const torch::Tensor pad_mask = out[i][0] == kPad;
    const torch::Tensor ones_mask = out[i][0] == 1.0f;
    EXPECT_EQ(pad_mask.sum().item<int64_t>() + ones_mask.sum().item<int64_t>(),
              16);
    // Padded pixels form whole rows/columns at the border: at most one row
    // and one column with padding 1, i.e. 0, 4, 4 or 7 pixels.
    const int64_t pads = pad_mask.sum().item<int64_t>();
    EXPECT_TRUE(pads == 0 || pads == 4 || pads == 7) << pads;
  }
}

}  // namespace
}  // namespace distill::data
