#include "teacher_server/chunks.h"

#include <google/protobuf/util/message_differencer.h>
#include <torch/torch.h>

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "common/testing/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "teacher_server/codec.h"

namespace distill::teacher {
namespace {

using ::distill::testing::IsOk;
using ::distill::testing::StatusIs;
using ::google::protobuf::util::MessageDifferencer;
using ::testing::HasSubstr;

// A language model's answer: dense targets over [3, 5] positions of 7
// classes (28 bytes a row in fp32).
v1::SoftTargets DenseAnswer(v1::Encoding encoding = v1::DENSE_FP32) {
  torch::manual_seed(2);
  auto targets = EncodeTargets(
      losses::TeacherTargets::DenseFromLogits(torch::randn({3, 5, 7}), 2.0),
      encoding);
  EXPECT_THAT(targets.status(), IsOk());
  return *targets;
}

v1::SoftTargets TopKAnswer() {
  torch::manual_seed(3);
  auto targets = EncodeTargets(
      losses::TeacherTargets::TopKFromLogits(torch::randn({2, 4, 9}), 1.0, 3),
      v1::TOP_K);
  EXPECT_THAT(targets.status(), IsOk());
  return *targets;
}

TEST(ChunksTest, RowBytesPerEncoding) {
  EXPECT_EQ(RowBytes(v1::DENSE_FP32, 32000, 0), 128000);
  EXPECT_EQ(RowBytes(v1::DENSE_FP16, 32000, 0), 64000);
  EXPECT_EQ(RowBytes(v1::DENSE_LOGP_FP16, 32000, 0), 64000);
  EXPECT_EQ(RowBytes(v1::TOP_K, 32000, 128), 772);  // 128 x (2 + 4) + 4
  EXPECT_EQ(RowBytes(v1::SAMPLED, 32000, 12), 60);  // 12 x (4 + 1)
  // 8 + 128 x 15 bits / 8 + 128 + the 4-byte tail.
  EXPECT_EQ(RowBytes(v1::TOP_K_PACKED, 32000, 128), 380);
}

TEST(ChunksTest, AnswerRowsArePositions) {
  EXPECT_EQ(AnswerRows(DenseAnswer()), 15);  // [3, 5] positions
  EXPECT_EQ(AnswerRows(TopKAnswer()), 8);    // [2, 4]
  EXPECT_EQ(AnswerRows(v1::SoftTargets()), 0);
}

TEST(ChunksTest, DenseAnswerSplitsIntoWholeRowsAndJoinsBack) {
  const v1::SoftTargets answer = DenseAnswer();
  // Room for two rows of 28 bytes per chunk: 15 rows in 8 chunks.
  auto chunks = SplitAnswer(9, answer, kChunkFramingBytes + 2 * 28 + 5);
  ASSERT_THAT(chunks.status(), IsOk());
  ASSERT_EQ(chunks->size(), 8u);
  for (size_t c = 0; c < chunks->size(); ++c) {
    const v1::DistillResponse& chunk = (*chunks)[c];
    EXPECT_EQ(chunk.batch_id(), 9u);
    EXPECT_EQ(chunk.chunk(), c);
    EXPECT_EQ(chunk.chunks(), 8u);
    EXPECT_EQ(chunk.first_row(), static_cast<int64_t>(2 * c));
    EXPECT_THAT(chunk.rows_shape(), ::testing::ElementsAre(3, 5));
    EXPECT_LE(static_cast<int64_t>(chunk.ByteSizeLong()),
              kChunkFramingBytes + 2 * 28 + 5);
  }
  EXPECT_EQ((*chunks)[7].targets().probs().shape(0), 1);  // the 15th row
  auto joined = JoinAnswer(*chunks);
  ASSERT_THAT(joined.status(), IsOk());
  EXPECT_EQ(joined->batch_id(), 9u);
  EXPECT_EQ(joined->chunks(), 0u);
  EXPECT_TRUE(MessageDifferencer::Equals(joined->targets(), answer))
      << joined->targets().DebugString().substr(0, 400);
}

TEST(ChunksTest, TopKAnswerKeepsValuesIndicesAndTailsTogether) {
  const v1::SoftTargets answer = TopKAnswer();
  // One row a chunk: 3 x 2 + 3 x 4 + 4 = 22 bytes.
  auto chunks = SplitAnswer(4, answer, kChunkFramingBytes + 22);
  ASSERT_THAT(chunks.status(), IsOk());
  ASSERT_EQ(chunks->size(), 8u);
  EXPECT_THAT((*chunks)[5].targets().tail_mass().shape(),
              ::testing::ElementsAre(1));
  auto joined = JoinAnswer(*chunks);
  ASSERT_THAT(joined.status(), IsOk());
  EXPECT_TRUE(MessageDifferencer::Equals(joined->targets(), answer));
  auto decoded = DecodeTargets(joined->targets(), 2);
  ASSERT_THAT(decoded.status(), IsOk());
  EXPECT_EQ(decoded->tail_mass.sizes(), (std::vector<int64_t>{2, 4}));
}

TEST(ChunksTest, PackedTopKAnswerKeepsRecordsAndTailsTogether) {
  torch::manual_seed(3);
  auto encoded = EncodeTargets(
      losses::TeacherTargets::TopKFromLogits(torch::randn({2, 4, 9}), 1.0, 3),
      v1::TOP_K_PACKED);
  ASSERT_THAT(encoded.status(), IsOk());
  const v1::SoftTargets answer = *encoded;
  // Two rows a chunk: 2 x (8 + 2 + 3) record bytes + 2 x 4 tail bytes.
  auto chunks = SplitAnswer(9, answer, kChunkFramingBytes + 34);
  ASSERT_THAT(chunks.status(), IsOk());
  ASSERT_EQ(chunks->size(), 4u);
  EXPECT_EQ((*chunks)[2].targets().top_k(), 3);
  EXPECT_THAT((*chunks)[2].targets().topk_packed().shape(),
              ::testing::ElementsAre(2, 13));
  auto joined = JoinAnswer(*chunks);
  ASSERT_THAT(joined.status(), IsOk());
  EXPECT_TRUE(MessageDifferencer::Equals(joined->targets(), answer));
  // A chunk that changes k is refused.
  std::vector<v1::DistillResponse> changed = *chunks;
  changed[1].mutable_targets()->set_top_k(4);
  EXPECT_THAT(JoinAnswer(changed).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("disagrees with chunk 0 on the encoding, "
                                 "temperature, class count, samples or k")));
}

TEST(ChunksTest, SampledAnswerKeepsIdsAndCountsTogether) {
  torch::manual_seed(4);
  const losses::TeacherTargets sampled =
      losses::TeacherTargets::SampledFromLogits(torch::randn({2, 4, 9}), 1.0,
                                                5);
  auto answer = EncodeTargets(sampled, v1::SAMPLED);
  ASSERT_THAT(answer.status(), IsOk());
  const int64_t width = answer->sample_ids().shape(2);
  // Three rows a chunk: 3 x width x (4 + 1) bytes.
  auto chunks = SplitAnswer(6, *answer, kChunkFramingBytes + 3 * width * 5);
  ASSERT_THAT(chunks.status(), IsOk());
  ASSERT_EQ(chunks->size(), 3u);
  EXPECT_EQ((*chunks)[1].targets().samples(), 5);
  EXPECT_THAT((*chunks)[2].targets().sample_counts().shape(),
              ::testing::ElementsAre(2, width));
  auto joined = JoinAnswer(*chunks);
  ASSERT_THAT(joined.status(), IsOk());
  EXPECT_TRUE(MessageDifferencer::Equals(joined->targets(), *answer));
  auto decoded = DecodeTargets(joined->targets(), 2);
  ASSERT_THAT(decoded.status(), IsOk());
  EXPECT_TRUE(torch::equal(decoded->indices, sampled.indices));
  EXPECT_TRUE(torch::equal(decoded->values, sampled.values));
}

TEST(ChunksTest, HiddenAnswerSplitsByPositions) {
  auto head = std::make_shared<losses::OutputHead>();
  head->weight = torch::randn({50, 6});
  const losses::TeacherTargets hidden =
      losses::TeacherTargets::FromHidden(torch::randn({2, 5, 6}), head, 1.0);
  auto answer = EncodeTargets(hidden, v1::HIDDEN_FP16);
  ASSERT_THAT(answer.status(), IsOk());
  EXPECT_EQ(RowBytes(v1::HIDDEN_FP16, 50, 6), 12);
  // Four positions a chunk: 4 x 6 x 2 bytes.
  auto chunks = SplitAnswer(8, *answer, kChunkFramingBytes + 4 * 12);
  ASSERT_THAT(chunks.status(), IsOk());
  ASSERT_EQ(chunks->size(), 3u);
  EXPECT_THAT((*chunks)[2].targets().hidden().shape(),
              ::testing::ElementsAre(2, 6));
  auto joined = JoinAnswer(*chunks);
  ASSERT_THAT(joined.status(), IsOk());
  EXPECT_TRUE(MessageDifferencer::Equals(joined->targets(), *answer));
  auto decoded = DecodeTargets(joined->targets(), 2, head);
  ASSERT_THAT(decoded.status(), IsOk());
  EXPECT_TRUE(torch::equal(decoded->hidden,
                           hidden.hidden.to(torch::kHalf).to(torch::kFloat)));
}

TEST(ChunksTest, AnAnswerThatFitsTravelsWhole) {
  const v1::SoftTargets answer = DenseAnswer(v1::DENSE_FP16);
  for (const int64_t limit : {int64_t{0}, int64_t{1} << 20}) {
    auto chunks = SplitAnswer(1, answer, limit);
    ASSERT_THAT(chunks.status(), IsOk());
    ASSERT_EQ(chunks->size(), 1u);
    EXPECT_EQ((*chunks)[0].chunks(), 0u);
    auto joined = JoinAnswer(*chunks);
    ASSERT_THAT(joined.status(), IsOk());
    EXPECT_TRUE(MessageDifferencer::Equals(joined->targets(), answer));
  }
}

TEST(ChunksTest, ALimitBelowOneRowIsRefused) {
  EXPECT_THAT(SplitAnswer(1, DenseAnswer(), kChunkFramingBytes + 27),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("cannot hold one row of 28 bytes")));
}

// What a broken or lying server could send instead of its chunks.
TEST(ChunksTest, BrokenChunkSequencesAreRefused) {
  auto split = SplitAnswer(6, DenseAnswer(), kChunkFramingBytes + 3 * 28);
  ASSERT_THAT(split.status(), IsOk());
  const std::vector<v1::DistillResponse> good = *split;  // 5 chunks
  ASSERT_EQ(good.size(), 5u);
  auto refused = [](std::vector<v1::DistillResponse> chunks,
                    const std::string& what) {
    EXPECT_THAT(JoinAnswer(chunks),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr(what)))
        << what;
  };
  std::vector<v1::DistillResponse> lost = good;
  lost.erase(lost.begin() + 2);
  refused(lost, "4 chunks of the 5 announced");
  std::vector<v1::DistillResponse> swapped = good;
  std::swap(swapped[1], swapped[2]);
  refused(swapped, "chunk 2 of 5 arrived in position 1");
  std::vector<v1::DistillResponse> twice = good;
  twice[3] = twice[2];
  refused(twice, "chunk 2 of 5 arrived in position 3");
  std::vector<v1::DistillResponse> other = good;
  other[4].set_batch_id(7);
  refused(other, "chunk 4 belongs to batch 7");
  std::vector<v1::DistillResponse> shifted = good;
  shifted[1].set_first_row(4);
  refused(shifted, "chunk 1 starts at row 4 of [3, 5]; expected row 3");
  std::vector<v1::DistillResponse> short_data = good;
  short_data[2].mutable_targets()->mutable_probs()->mutable_data()->resize(80);
  refused(short_data, "chunk 2 tensor 0 is [3, 7] of 80 bytes");
  std::vector<v1::DistillResponse> hotter = good;
  hotter[3].mutable_targets()->set_temperature(3.0);
  refused(hotter, "chunk 3 disagrees with chunk 0");
  std::vector<v1::DistillResponse> more_rows = good;
  more_rows[0].set_rows_shape(1, 6);
  refused(more_rows, "chunk 1 starts at row 3 of [3, 5]");
  refused({}, "at least one chunk");
}

}  // namespace
}  // namespace distill::teacher
