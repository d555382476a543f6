#include "teacher_server/output_head.h"

#include <torch/torch.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "common/testing/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "teacher_server/chunks.h"

namespace distill::teacher {
namespace {

using ::distill::testing::IsOk;
using ::distill::testing::StatusIs;
using ::testing::HasSubstr;

// weight = [[0, .25, .5], [.75, 1, 1.25], ...] (4 x 3), bias [.5, -1, 2, 0].
losses::OutputHead SmallHead(bool bias) {
  losses::OutputHead head;
  head.weight = torch::arange(12, torch::kFloat).reshape({4, 3}) / 4;
  if (bias) head.bias = torch::tensor({0.5f, -1.0f, 2.0f, 0.0f});
  return head;
}

// Python's hashlib.sha256 of numpy's little-endian float32 bytes of the
// head above: weight.tobytes() + bias.tobytes(), and weight alone.
constexpr char kWithBias[] =
    "3cd687965f1296bafaa3e009ce53f6544889729844e2feeb27183d0c217e9b87";
constexpr char kWeightOnly[] =
    "7a3c06cfb2fbaf0c864167c11e30fda1f77447e3998d704800da475236c7d7d3";

// Room for exactly `rows` rows of width 3 (4 x (3 + 1) bytes each).
int64_t BytesFor(int64_t rows) { return kChunkFramingBytes + rows * 16; }

std::vector<v1::OutputHeadPage> Pages(const losses::OutputHead& head,
                                      const std::string& sha, int64_t rows) {
  std::vector<v1::OutputHeadPage> pages;
  for (int64_t row = 0; row < head.weight.size(0);) {
    absl::StatusOr<v1::OutputHeadPage> page =
        OutputHeadPageAt(head, sha, row, BytesFor(rows));
    EXPECT_THAT(page.status(), IsOk());
    if (!page.ok()) break;
    row += page->weight().shape(0);
    pages.push_back(*page);
  }
  return pages;
}

TEST(OutputHeadTest, HashIsTheWeightsThenTheBiasAsFloat32Bytes) {
  EXPECT_EQ(*OutputHeadSha256(SmallHead(true)), kWithBias);
  EXPECT_EQ(*OutputHeadSha256(SmallHead(false)), kWeightOnly);
}

TEST(OutputHeadTest, PagesJoinToTheSameHead) {
  for (bool bias : {true, false}) {
    losses::OutputHead head = SmallHead(bias);
    head.logit_scale = 0.5;
    head.logit_softcap = 30;
    const std::string sha = bias ? kWithBias : kWeightOnly;
    const std::vector<v1::OutputHeadPage> pages = Pages(head, sha, 3);
    ASSERT_EQ(pages.size(), 2u);  // rows 0-2, then row 3
    EXPECT_EQ(pages[1].first_row(), 3);
    EXPECT_EQ(pages[1].weight().shape(0), 1);
    OutputHeadAssembler assembler(4, 3);
    for (const auto& page : pages) {
      ASSERT_THAT(assembler.Add(page, BytesFor(3)), IsOk());
    }
    ASSERT_TRUE(assembler.done());
    auto joined = assembler.Finish();
    ASSERT_THAT(joined.status(), IsOk());
    EXPECT_TRUE(torch::equal((*joined)->weight, head.weight));
    EXPECT_EQ((*joined)->bias.defined(), bias);
    if (bias) {
      EXPECT_TRUE(torch::equal((*joined)->bias, head.bias));
    }
    EXPECT_EQ((*joined)->logit_scale, 0.5);
    EXPECT_EQ((*joined)->logit_softcap, 30);
  }
}

TEST(OutputHeadTest, LogitsApplyBiasScaleAndSoftcap) {
  losses::OutputHead head = SmallHead(true);
  head.logit_scale = 2;
  head.logit_softcap = 3;
  const torch::Tensor h = torch::tensor({{1.0f, -2.0f, 0.5f}});
  // Row 1 of the weight is [.75, 1, 1.25]: .75 - 2 + .625 = -0.625; with
  // bias -1: -1.625; scaled: -3.25; capped: 3 tanh(-3.25 / 3).
  const torch::Tensor z = head.Logits(h);
  EXPECT_NEAR(z[0][1].item<double>(), 3 * std::tanh(-3.25 / 3), 1e-6);
  // Row 0 is [0, .25, .5]: -0.5 + .25 = -0.25; + .5 = .25; x 2 = .5.
  EXPECT_NEAR(z[0][0].item<double>(), 3 * std::tanh(0.5 / 3), 1e-6);
}

TEST(OutputHeadTest, PagesHoldWhatFitsUpToTheServersMost) {
  // 4 x (3 + 1) bytes a row: 2 rows in 4096 + 32 bytes, the default 1 MiB
  // holds every row left, and a huge request is cut to 4 MiB.
  EXPECT_EQ(*OutputHeadPageRows(4, 3, 0, BytesFor(2)), 2);
  EXPECT_EQ(*OutputHeadPageRows(4, 3, 3, BytesFor(2)), 1);
  EXPECT_EQ(*OutputHeadPageRows(4, 3, 1, 0), 3);
  EXPECT_EQ(*OutputHeadPageRows(1 << 20, 1023, 0,
                                std::numeric_limits<int64_t>::max()),
            ((4 << 20) - 4096) / 4096);
}

TEST(OutputHeadTest, BadRequestsAreRefused) {
  const losses::OutputHead head = SmallHead(true);
  EXPECT_THAT(OutputHeadPageAt(head, kWithBias, 4, 0).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("first_row must be in [0, 4), got 4")));
  EXPECT_THAT(
      OutputHeadPageAt(head, kWithBias, -1, 0).status(),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("got -1")));
  EXPECT_THAT(
      OutputHeadPageAt(head, kWithBias, 0, BytesFor(1) - 1).status(),
      StatusIs(absl::StatusCode::kInvalidArgument,
               HasSubstr("max_bytes must be 0 or at least 4112 (one row")));
}

// Pages from a server that lies: each refused naming what is wrong, and a
// head whose bytes were changed under an unchanged hash is DataLoss.
TEST(OutputHeadTest, PagesThatLieAreRefused) {
  const losses::OutputHead head = SmallHead(true);
  const std::vector<v1::OutputHeadPage> good = Pages(head, kWithBias, 2);
  ASSERT_EQ(good.size(), 2u);

  auto refused = [](std::vector<v1::OutputHeadPage> pages,
                    const std::string& why) {
    OutputHeadAssembler assembler(4, 3);
    absl::Status status;
    for (const auto& page : pages) {
      status = assembler.Add(page, BytesFor(2));
      if (!status.ok()) break;
    }
    EXPECT_THAT(status,
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr(why)));
  };
  {
    auto pages = good;
    pages[0].set_vocab_size(5);
    refused(pages, "a page says [5, 3] but Info said [4, 3]");
  }
  {
    auto pages = good;
    pages[1].set_first_row(3);
    refused(pages, "a page starts at row 3 but row 2 was asked for");
  }
  {
    auto pages = good;
    pages[1].set_logit_softcap(50);
    refused(pages, "describes another head than the first page");
  }
  {
    auto pages = good;
    pages[1].clear_bias();
    refused(pages, "describes another head than the first page");
  }
  {
    auto pages = good;
    pages[0].set_logit_scale(std::numeric_limits<double>::quiet_NaN());
    refused(pages, "must be finite");
  }
  {
    auto pages = good;
    pages[0].set_sha256("abc");
    refused(pages, "sha256 is not 64 hex digits");
  }
  {
    // Three rows where two remain.
    auto pages = good;
    *pages[1].mutable_weight() = good[0].weight();
    pages[1].mutable_weight()->set_data(good[0].weight().data() +
                                        good[1].weight().data().substr(0, 12));
    pages[1].mutable_weight()->set_shape(0, 3);
    refused(pages,
            "a page's weight is [3, 3]; the request from row 2 "
            "takes [2, 3]");
  }
  {
    // One row where the request has room for two: a server that sends a
    // row per call would stretch the transfer over V calls.
    auto pages = good;
    pages[0].mutable_weight()->set_data(good[0].weight().data().substr(0, 12));
    pages[0].mutable_weight()->set_shape(0, 1);
    pages[0].mutable_bias()->set_data(good[0].bias().data().substr(0, 4));
    pages[0].mutable_bias()->set_shape(0, 1);
    refused(pages,
            "a page's weight is [1, 3]; the request from row 0 "
            "takes [2, 3]");
  }
  {
    auto pages = good;
    pages[1].mutable_weight()->set_dtype(v1::Tensor::FLOAT16);
    refused(pages, "weight and bias must be FLOAT32");
  }
  {
    auto pages = good;
    std::string data = pages[0].weight().data();
    const float inf = std::numeric_limits<float>::infinity();
    std::memcpy(data.data() + 4, &inf, 4);
    pages[0].mutable_weight()->set_data(data);
    refused(pages, "holds a number that is not finite");
  }
  {
    // One weight changed, the hash left as it was.
    auto pages = good;
    std::string data = pages[1].weight().data();
    data[0] ^= 1;
    pages[1].mutable_weight()->set_data(data);
    OutputHeadAssembler assembler(4, 3);
    for (const auto& page : pages) {
      ASSERT_THAT(assembler.Add(page, BytesFor(2)), IsOk());
    }
    EXPECT_THAT(assembler.Finish().status(),
                StatusIs(absl::StatusCode::kDataLoss,
                         HasSubstr(std::string("not to ") + kWithBias)));
  }
  {
    // A head that stops early is not a head.
    OutputHeadAssembler assembler(4, 3);
    ASSERT_THAT(assembler.Add(good[0], BytesFor(2)), IsOk());
    EXPECT_THAT(assembler.Finish().status(),
                StatusIs(absl::StatusCode::kFailedPrecondition,
                         HasSubstr("has 2 of 4 rows")));
  }
}

}  // namespace
}  // namespace distill::teacher
