#include "losses/teacher_targets.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <limits>
#include <memory>
#include <vector>

#include "common/testing/status_matchers.h"

namespace distill::losses {
namespace {

using ::distill::testing::IsOk;
using ::distill::testing::StatusIs;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

TEST(TeacherTargetsTest, DenseIsSoftmaxAtTemperature) {
  const torch::Tensor logits =
      torch::tensor({{1.0, 2.0, 4.0}, {0.0, 0.0, 0.0}}, torch::kFloat);
  const TeacherTargets t = TeacherTargets::DenseFromLogits(logits, 2.0);
  EXPECT_EQ(t.form, TeacherTargets::Form::kDense);
  EXPECT_EQ(t.num_classes, 3);
  EXPECT_DOUBLE_EQ(t.temperature, 2.0);
  EXPECT_EQ(t.probs.scalar_type(), torch::kFloat);
  const double z = std::exp(0.5) + std::exp(1.0) + std::exp(2.0);
  EXPECT_NEAR(t.probs[0][2].item<double>(), std::exp(2.0) / z, 1e-7);
  EXPECT_NEAR(t.probs[1][1].item<double>(), 1.0 / 3, 1e-7);
}

TEST(TeacherTargetsTest, DenseIsStableForHugeLogits) {
  const torch::Tensor logits = torch::tensor({{1e4, -1e4, 1e4 - 1.0}});
  const TeacherTargets t = TeacherTargets::DenseFromLogits(logits, 1.0);
  EXPECT_TRUE(torch::isfinite(t.probs).all().item<bool>());
  EXPECT_NEAR(t.probs.sum().item<double>(), 1.0, 1e-6);
  EXPECT_EQ(t.probs[0][1].item<double>(), 0.0);
  const TeacherTargets half =
      TeacherTargets::DenseFromLogits(logits.to(torch::kHalf), 1.0);
  EXPECT_EQ(half.probs.scalar_type(), torch::kFloat);
}

TEST(TeacherTargetsTest, TopKKeepsLargestAndTail) {
  const torch::Tensor logits =
      torch::tensor({{0.1, 3.0, -1.0, 2.0}, {5.0, 1.0, 4.0, 0.0}});
  const TeacherTargets dense = TeacherTargets::DenseFromLogits(logits, 1.5);
  const TeacherTargets t = TeacherTargets::TopKFromLogits(logits, 1.5, 2);
  EXPECT_EQ(t.form, TeacherTargets::Form::kTopK);
  EXPECT_EQ(t.num_classes, 4);
  EXPECT_TRUE(
      torch::equal(t.indices, torch::tensor({{1, 3}, {0, 2}}, torch::kLong)));
  EXPECT_TRUE(torch::allclose(t.values, dense.probs.gather(-1, t.indices)));
  EXPECT_TRUE(torch::allclose(t.tail_mass, 1.0 - t.values.sum(-1)));
  const TeacherTargets all = TeacherTargets::TopKFromLogits(logits, 1.5, 99);
  EXPECT_EQ(all.values.size(-1), 4);
  EXPECT_TRUE((all.tail_mass >= 0).all().item<bool>());
  EXPECT_LT(all.tail_mass.max().item<double>(), 1e-6);
}

// At k = 1,024 of a peaked distribution the tail is ~6e-9 of the mass:
// 1 - sum(values) in float32 is rounding noise there (the values' own
// rounding is ~1e-7), so the tail comes from the logits in log space.
TEST(TeacherTargetsTest, TopKTailIsExactWhereOneMinusTheSumIsNoise) {
  constexpr int64_t kVocab = 4096, kTop = 1024;
  // 1,024 classes at logit 0 and 3,072 at -20: the tail's mass is
  // 3072 e^-20 / (1024 + 3072 e^-20), by hand.
  const torch::Tensor logits =
      torch::cat(
          {torch::zeros({2, kTop}), torch::full({2, kVocab - kTop}, -20.0)}, -1)
          .index_select(-1, torch::randperm(kVocab));
  const double small = 3072.0 * std::exp(-20.0);
  const double want = small / (1024.0 + small);
  const TeacherTargets t = TeacherTargets::TopKFromLogits(logits, 1.0, kTop);
  ASSERT_EQ(t.tail_mass.sizes(), (std::vector<int64_t>{2}));
  for (int row = 0; row < 2; ++row) {
    EXPECT_NEAR(t.tail_mass[row].item<double>(), want, 1e-4 * want);
  }
  // What the subtraction gives, for the record: off by far more than the
  // tail itself.
  const double subtracted = (1.0 - t.values[0].sum()).item<double>();
  EXPECT_GT(std::abs(subtracted - want), 0.5 * want);
}

TEST(TeacherTargetsTest, SampledRowsAreDistinctIdsWithTheirCounts) {
  torch::manual_seed(11);
  // Two rows that can only draw from {1, 3} and {0} respectively.
  const double inf = std::numeric_limits<double>::infinity();
  const torch::Tensor logits = torch::tensor(
      {{-inf, 0.0, -inf, 0.0, -inf}, {0.0, -inf, -inf, -inf, -inf}});
  const TeacherTargets t = TeacherTargets::SampledFromLogits(logits, 1.0, 6);
  EXPECT_EQ(t.form, TeacherTargets::Form::kSampled);
  EXPECT_EQ(t.samples, 6);
  ASSERT_EQ(t.values.sizes(), (std::vector<int64_t>{2, 6}));
  ASSERT_EQ(t.indices.sizes(), (std::vector<int64_t>{2, 6}));
  EXPECT_TRUE(torch::allclose(t.values.sum(-1), torch::ones({2})));
  EXPECT_TRUE(torch::equal(t.tail_mass, torch::zeros({2})));
  // Row 1: all six draws are class 0, in slot 0; the rest is padding.
  EXPECT_EQ(t.indices[1][0].item<int64_t>(), 0);
  EXPECT_DOUBLE_EQ(t.values[1][0].item<double>(), 1.0);
  EXPECT_EQ(t.values[1].slice(0, 1).count_nonzero().item<int64_t>(), 0);
  // Row 0: only ids 1 and 3, each listed once, counts in sixths.
  const torch::Tensor listed = t.values[0] > 0;
  const torch::Tensor ids = t.indices[0].masked_select(listed);
  EXPECT_TRUE(((ids == 1) | (ids == 3)).all().item<bool>());
  EXPECT_EQ(std::get<0>(torch::_unique(ids)).numel(), ids.numel());
  const torch::Tensor sixths = t.values[0] * 6;
  EXPECT_TRUE(torch::allclose(sixths, sixths.round()));
}

// counts / m is an unbiased estimate of p_T: over 20,000 rows the mean
// frequency of each class is p_T within 6 standard errors
// (sqrt(p (1 - p) / (m * rows))).
TEST(TeacherTargetsTest, SampledFrequenciesEstimateTheDistribution) {
  torch::manual_seed(12);
  constexpr int64_t kRows = 20000, kDraws = 12;
  const torch::Tensor row = torch::tensor({2.0, 1.0, 0.5, 0.0, -1.0, -3.0});
  const TeacherTargets t = TeacherTargets::SampledFromLogits(
      row.expand({kRows, 6}).reshape({kRows / 4, 4, 6}), 1.5, kDraws);
  ASSERT_EQ(t.values.sizes(), (std::vector<int64_t>{kRows / 4, 4, kDraws}));
  const torch::Tensor freq =
      torch::zeros({kRows, 6}, torch::kDouble)
          .scatter_add_(1, t.indices.reshape({kRows, kDraws}),
                        t.values.reshape({kRows, kDraws}).to(torch::kDouble))
          .mean(0);
  const torch::Tensor p = torch::softmax(row.to(torch::kDouble) / 1.5, -1);
  for (int64_t c = 0; c < 6; ++c) {
    const double pc = p[c].item<double>();
    const double se = std::sqrt(pc * (1 - pc) / (kDraws * kRows));
    EXPECT_NEAR(freq[c].item<double>(), pc, 6 * se) << "class " << c;
  }
}

TEST(TeacherTargetsTest, BatchShape) {
  const torch::Tensor seq = torch::randn({2, 3, 5});
  EXPECT_THAT(TeacherTargets::DenseFromLogits(seq, 1).batch_shape(),
              ElementsAre(2, 3));
  EXPECT_THAT(TeacherTargets::TopKFromLogits(seq, 1, 2).batch_shape(),
              ElementsAre(2, 3));
  EXPECT_EQ(TeacherTargets::TopKFromLogits(seq, 1, 2).batch_size(), 2);
  EXPECT_EQ(
      TeacherTargets::DenseFromLogits(torch::randn({7, 5}), 1).batch_size(), 7);
  EXPECT_EQ(TeacherTargets().batch_size(), 0);
}

TEST(TeacherTargetsTest, RowsSelectsEveryTensor) {
  const torch::Tensor logits = torch::randn({4, 6});
  const torch::Tensor positions = torch::tensor({3, 1}, torch::kLong);
  const TeacherTargets top = TeacherTargets::TopKFromLogits(logits, 2.0, 3);
  const TeacherTargets rows = top.Rows(positions);
  EXPECT_EQ(rows.batch_size(), 2);
  EXPECT_TRUE(torch::equal(rows.values[0], top.values[3]));
  EXPECT_TRUE(torch::equal(rows.indices[1], top.indices[1]));
  EXPECT_TRUE(
      torch::equal(rows.tail_mass, top.tail_mass.index_select(0, positions)));
  const TeacherTargets dense = TeacherTargets::DenseFromLogits(logits, 2.0);
  EXPECT_TRUE(torch::equal(dense.Rows(positions).probs[0], dense.probs[3]));
}

TEST(TeacherTargetsTest, ConcatJoinsRows) {
  const torch::Tensor logits = torch::randn({5, 6});
  const TeacherTargets top = TeacherTargets::TopKFromLogits(logits, 2.0, 3);
  absl::StatusOr<TeacherTargets> joined = TeacherTargets::Concat(
      {top.Rows(torch::tensor({0, 1})), top.Rows(torch::tensor({2, 3, 4}))});
  ASSERT_THAT(joined, IsOk());
  EXPECT_TRUE(torch::equal(joined->values, top.values));
  EXPECT_TRUE(torch::equal(joined->indices, top.indices));
  EXPECT_TRUE(torch::equal(joined->tail_mass, top.tail_mass));
  EXPECT_EQ(joined->num_classes, 6);
  EXPECT_EQ(joined->form, TeacherTargets::Form::kTopK);
}

TEST(TeacherTargetsTest, HiddenTargetsSliceJoinAndMaterialize) {
  auto head = std::make_shared<OutputHead>();
  head->weight = torch::randn({7, 3});
  head->bias = torch::randn({7});
  const torch::Tensor h = torch::randn({4, 2, 3});
  const TeacherTargets t = TeacherTargets::FromHidden(h, head, 2.0);
  EXPECT_EQ(t.batch_shape(), torch::IntArrayRef({4, 2}));
  EXPECT_EQ(t.num_classes, 7);
  absl::StatusOr<TeacherTargets> joined = TeacherTargets::Concat(
      {t.Rows(torch::tensor({0, 1, 2})), t.Rows(torch::tensor({3}))});
  ASSERT_THAT(joined, IsOk());
  EXPECT_TRUE(torch::equal(joined->hidden, h));
  EXPECT_EQ(joined->head, head);
  // p_T = softmax((h W^T + b) / T), written out.
  const torch::Tensor want = torch::softmax(
      (torch::matmul(h, head->weight.t()) + head->bias) / 2.0, -1);
  const TeacherTargets dense = joined->Materialized();
  EXPECT_EQ(dense.form, TeacherTargets::Form::kDense);
  EXPECT_TRUE(torch::allclose(dense.probs, want, 1e-5, 1e-6));
  // Another head's states do not join these.
  auto other = std::make_shared<OutputHead>(*head);
  EXPECT_THAT(
      TeacherTargets::Concat({t, TeacherTargets::FromHidden(h, other, 2.0)}),
      StatusIs(absl::StatusCode::kInvalidArgument,
               HasSubstr("part 1 comes with another output head")));
}

TEST(TeacherTargetsTest, ConcatRefusesMismatches) {
  const torch::Tensor logits = torch::randn({2, 6});
  const TeacherTargets dense = TeacherTargets::DenseFromLogits(logits, 2.0);
  EXPECT_THAT(TeacherTargets::Concat({}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("zero")));
  EXPECT_THAT(TeacherTargets::Concat(
                  {dense, TeacherTargets::TopKFromLogits(logits, 2.0, 2)}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("part 1 is top-k but part 0 is dense")));
  EXPECT_THAT(TeacherTargets::Concat(
                  {dense, TeacherTargets::DenseFromLogits(logits, 3)}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("temperature 3 but part 0 has 2")));
  EXPECT_THAT(TeacherTargets::Concat({dense, TeacherTargets::DenseFromLogits(
                                                 torch::randn({2, 5}), 2.0)}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("5 classes but part 0 has 6")));
  EXPECT_THAT(
      TeacherTargets::Concat({TeacherTargets::TopKFromLogits(logits, 2.0, 2),
                              TeacherTargets::TopKFromLogits(logits, 2.0, 3)}),
      StatusIs(absl::StatusCode::kInvalidArgument,
               HasSubstr("only the first dimension may differ")));
}

}  // namespace
}  // namespace distill::losses
