// The TOP_K_PACKED record against hand-packed bytes, its round trip's error
// bound, and records that lie.
#include "teacher_server/packed_topk.h"

#include <torch/torch.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "common/testing/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace distill::teacher {
namespace {

using ::distill::testing::IsOk;
using ::distill::testing::StatusIs;
using ::testing::HasSubstr;

TEST(PackedTopKTest, IdBitsAndRowBytes) {
  EXPECT_EQ(PackedIdBits(1), 1);
  EXPECT_EQ(PackedIdBits(2), 1);
  EXPECT_EQ(PackedIdBits(10), 4);
  EXPECT_EQ(PackedIdBits(8192), 13);
  EXPECT_EQ(PackedIdBits(8193), 14);
  EXPECT_EQ(PackedIdBits(32000), 15);
  EXPECT_EQ(PackedIdBits(151936), 18);
  // 8 + 128 x 15 / 8 + 128: the 376 bytes a row teacher.proto states.
  EXPECT_EQ(PackedRowBytes(128, 32000), 376);
  EXPECT_EQ(PackedRowBytes(3, 10), 8 + 2 + 3);  // 12 bits round up to 2 bytes
}

TEST(PackedTopKTest, LayoutMatchesHandPackedBytes) {
  // V = 10: 4-bit ids. Probabilities 1/2, 1/5, 1/8 at classes 9, 0, 5.
  const torch::Tensor values = torch::tensor({{0.5f, 0.2f, 0.125f}});
  const torch::Tensor ids = torch::tensor({{9L, 0L, 5L}});
  const torch::Tensor packed = PackTopK(values, ids, 10);
  ASSERT_EQ(packed.sizes(), torch::IntArrayRef({1, 13}));
  std::vector<uint8_t> want(13);
  const float hi = std::log(0.5f), lo = std::log(0.125f);
  std::memcpy(want.data(), &hi, 4);
  std::memcpy(want.data() + 4, &lo, 4);
  want[8] = 0x09;  // id 9 in bits 0-3, id 0 in bits 4-7
  want[9] = 0x05;  // id 5 in bits 0-3, then padding
  want[10] = 0;    // log 1/2 = hi
  want[11] = 169;  // ln(0.5 / 0.2) / ln(0.5 / 0.125) = 0.661; x 255 = 168.6
  want[12] = 255;  // log 1/8 = lo
  const std::vector<uint8_t> got(packed.data_ptr<uint8_t>(),
                                 packed.data_ptr<uint8_t>() + 13);
  EXPECT_EQ(got, want);

  auto back = UnpackTopK(packed, 3, 10);
  ASSERT_THAT(back.status(), IsOk());
  EXPECT_TRUE(torch::equal(back->indices, ids));
  EXPECT_FLOAT_EQ(back->values[0][0].item<float>(), 0.5f);
  EXPECT_FLOAT_EQ(back->values[0][2].item<float>(), 0.125f);
  // Code 169 means ln 1/2 + 169/255 x ln 1/4: 0.19951, not 0.2.
  EXPECT_NEAR(back->values[0][1].item<float>(), 0.19951, 1e-5);
  EXPECT_NEAR(back->relative_error[0].item<float>(),
              std::expm1((hi - lo) / 510), 1e-7);
}

TEST(PackedTopKTest, IdsAloneMatchHandPackedBytes) {
  // V = 1000: 10-bit ids 1, 1023 - 24 = 999 and 512 in 30 bits, 4 bytes:
  // 0000000001 | 1111100111 | 1000000000, least significant bit first.
  const torch::Tensor ids = torch::tensor({{1L, 999L, 512L}});
  const torch::Tensor packed = PackIds(ids, 1000);
  ASSERT_EQ(packed.sizes(), torch::IntArrayRef({1, 4}));
  // bits 0-9: 1; bits 10-19: 999 = 0b1111100111; bits 20-29: 512.
  const uint32_t word = 1u | (999u << 10) | (512u << 20);
  const std::vector<uint8_t> want = {static_cast<uint8_t>(word & 0xff),
                                     static_cast<uint8_t>(word >> 8 & 0xff),
                                     static_cast<uint8_t>(word >> 16 & 0xff),
                                     static_cast<uint8_t>(word >> 24 & 0xff)};
  const std::vector<uint8_t> got(packed.data_ptr<uint8_t>(),
                                 packed.data_ptr<uint8_t>() + 4);
  EXPECT_EQ(got, want);

  auto back = UnpackIds(packed, 3, 1000);
  ASSERT_THAT(back.status(), IsOk());
  EXPECT_TRUE(torch::equal(*back, ids));
  // The same bits read against V = 900 hold an id past the vocabulary.
  EXPECT_THAT(UnpackIds(packed, 3, 900).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("holds id 999; ids are [0, 900)")));
  EXPECT_THAT(UnpackIds(packed, 4, 1000).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("must be 5 bytes a row")));
}

TEST(PackedTopKTest, RoundTripStaysWithinTheStatedError) {
  torch::manual_seed(5);
  // A language model's shape: [2, 6] positions, V = 32,000, k = 128.
  const torch::Tensor p = torch::softmax(3 * torch::randn({2, 6, 32000}), -1);
  const auto [values, ids] = p.topk(128);
  const torch::Tensor packed = PackTopK(values, ids, 32000);
  EXPECT_EQ(packed.sizes(), torch::IntArrayRef({2, 6, 376}));
  auto back = UnpackTopK(packed, 128, 32000);
  ASSERT_THAT(back.status(), IsOk());
  EXPECT_TRUE(torch::equal(back->indices, ids));
  const torch::Tensor relative = (back->values / values - 1).abs();
  EXPECT_TRUE((relative <= back->relative_error.unsqueeze(-1) * 1.0001 + 1e-6)
                  .all()
                  .item<bool>());
  // And the bound is not loose: some value uses most of it.
  EXPECT_GT((relative / back->relative_error.unsqueeze(-1)).max().item<float>(),
            0.5);
}

TEST(PackedTopKTest, ZeroProbabilitiesSitAtTheFloor) {
  const torch::Tensor packed =
      PackTopK(torch::tensor({{1.0f, 0.0f}}), torch::tensor({{1L, 0L}}), 4);
  auto back = UnpackTopK(packed, 2, 4);
  ASSERT_THAT(back.status(), IsOk());
  EXPECT_FLOAT_EQ(back->values[0][0].item<float>(), 1.0f);
  EXPECT_FLOAT_EQ(back->values[0][1].item<float>(), std::exp(kPackedLogFloor));
}

TEST(PackedTopKTest, LyingRecordsAreRefused) {
  const torch::Tensor good = PackTopK(torch::tensor({{0.5f, 0.2f, 0.125f}}),
                                      torch::tensor({{9L, 0L, 5L}}), 10);
  EXPECT_THAT(UnpackTopK(good, 4, 10).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "topk_packed rows must be 14 bytes (k = 4, 4-bit ids), "
                       "got 13"));
  torch::Tensor id_too_big = good.clone();
  id_too_big[0][9] = 0x0c;  // third id 12 >= 10
  EXPECT_THAT(
      UnpackTopK(id_too_big, 3, 10).status(),
      StatusIs(absl::StatusCode::kInvalidArgument,
               "topk_packed row 0 lists class 12; classes are [0, 10)"));
  const auto with_range = [&](float hi, float lo) {
    torch::Tensor t = good.clone();
    std::memcpy(t.data_ptr<uint8_t>(), &hi, 4);
    std::memcpy(t.data_ptr<uint8_t>() + 4, &lo, 4);
    return UnpackTopK(t, 3, 10).status();
  };
  EXPECT_THAT(with_range(-1, -0.5),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("range [-0.5, -1]; it must be finite, "
                                 "ordered and at most 0")));
  EXPECT_THAT(with_range(0.5, -1),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("log-probability range")));
  EXPECT_THAT(with_range(NAN, -1),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("log-probability range")));
  EXPECT_THAT(with_range(0, -INFINITY),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("log-probability range")));
  EXPECT_THAT(UnpackTopK(good.to(torch::kFloat), 3, 10).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("topk_packed rows must be 13 bytes")));
}

}  // namespace
}  // namespace distill::teacher
