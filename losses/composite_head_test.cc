// The chunked head loss against the plain one: the same value, terms and
// gradients, computed the unchunked way (logits = hidden @ head^T, then
// CompositeLoss::Compute and autograd).
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <memory>

#include "common/labels.h"
#include "common/testing/status_matchers.h"
#include "losses/composite.h"

namespace distill::losses {
namespace {

using ::distill::testing::StatusIs;
using ::testing::HasSubstr;

struct Case {
  std::vector<TermSpec> terms;
  bool top_k = false;
  // The chunked loss gets the teacher's hidden states and head, the plain
  // one the dense targets of the same logits.
  bool hidden = false;
};

class ComputeOverHeadTest : public ::testing::TestWithParam<int64_t> {};

void ExpectSameAsUnchunked(const Case& c, int64_t chunk) {
  torch::manual_seed(11);
  const int64_t n = 3, s = 5, h = 8, v = 40;
  const torch::Tensor hidden0 = torch::randn({n, s, h});
  const torch::Tensor head0 = torch::randn({v, h}) * 0.5;
  torch::Tensor labels = torch::randint(0, v, {n, s}, torch::kLong);
  labels[2].slice(0, 2) = kIgnoreLabel;  // a padded last window
  labels[0][0] = kIgnoreLabel;
  auto teacher_head = std::make_shared<OutputHead>();
  teacher_head->weight = torch::randn({v, 6});
  const torch::Tensor teacher_hidden = torch::randn({n, s, 6});
  const torch::Tensor teacher_logits =
      c.hidden ? torch::matmul(teacher_hidden, teacher_head->weight.t())
               : torch::randn({n, s, v}) * 3;
  const TeacherTargets targets =
      c.top_k ? TeacherTargets::TopKFromLogits(teacher_logits, 2.0, 6)
              : TeacherTargets::DenseFromLogits(teacher_logits, 2.0);
  const TeacherTargets hidden_targets =
      TeacherTargets::FromHidden(teacher_hidden, teacher_head, 2.0);
  auto loss = CompositeLoss::Create(c.terms);
  ASSERT_TRUE(loss.ok()) << loss.status();

  const torch::Tensor hidden_a = hidden0.clone().requires_grad_(true);
  const torch::Tensor head_a = head0.clone().requires_grad_(true);
  LossInputs plain;
  plain.student_logits = torch::matmul(hidden_a, head_a.t());
  plain.teacher = &targets;
  plain.labels = labels;
  auto expected = loss->Compute(plain);
  ASSERT_TRUE(expected.ok()) << expected.status();
  expected->total.backward();

  const torch::Tensor hidden_b = hidden0.clone().requires_grad_(true);
  const torch::Tensor head_b = head0.clone().requires_grad_(true);
  HeadLossInputs chunked;
  chunked.hidden = hidden_b;
  chunked.head_weight = head_b;
  chunked.teacher = c.hidden ? &hidden_targets : &targets;
  chunked.labels = labels;
  chunked.chunk_tokens = chunk;
  auto got = loss->ComputeOverHead(chunked);
  ASSERT_TRUE(got.ok()) << got.status();
  (got->total * 1.0).backward();

  EXPECT_NEAR(got->total.item<double>(), expected->total.item<double>(), 1e-5);
  for (const auto& [name, value] : expected->terms) {
    EXPECT_NEAR(got->terms.at(name), value, 1e-5) << name;
  }
  EXPECT_TRUE(torch::allclose(hidden_b.grad(), hidden_a.grad(), 1e-5, 1e-6));
  EXPECT_TRUE(torch::allclose(head_b.grad(), head_a.grad(), 1e-5, 1e-6));
  // Ignored positions get no gradient.
  EXPECT_EQ(hidden_b.grad()[2].slice(0, 2).abs().sum().item<double>(), 0.0);
}

TEST_P(ComputeOverHeadTest, DenseTargetsGiveTheUnchunkedLossAndGradients) {
  ExpectSameAsUnchunked({{{"kd_kl", 0.9, {}}, {"hard_ce", 0.1, {}}}},
                        GetParam());
}

TEST_P(ComputeOverHeadTest, TopKTargetsGiveTheUnchunkedLossAndGradients) {
  ExpectSameAsUnchunked({{{"reverse_kl", 0.5, {}},
                          {"js", 0.3, {}},
                          {"tvd", 0.2, {}},
                          {"generalized_jsd", 0.4, {{"beta", 0.3}}},
                          {"hard_ce", 1.0, {}}},
                         /*top_k=*/true},
                        GetParam());
}

// Hidden states become the teacher's probabilities a chunk at a time.
TEST_P(ComputeOverHeadTest, HiddenTargetsGiveTheDenseLossAndGradients) {
  ExpectSameAsUnchunked(
      {{{"kd_kl", 0.7, {}}, {"reverse_kl", 0.2, {}}, {"hard_ce", 0.1, {}}},
       /*top_k=*/false,
       /*hidden=*/true},
      GetParam());
}

// Chunks of one token, of a size that does not divide the 15 positions,
// and one chunk for all.
INSTANTIATE_TEST_SUITE_P(ChunkSizes, ComputeOverHeadTest,
                         ::testing::Values(1, 4, 15, 1024));

TEST(ComputeOverHeadErrorsTest, RefusesShapesThatDoNotFit) {
  auto loss = CompositeLoss::Create({{"hard_ce", 1.0, {}}});
  ASSERT_TRUE(loss.ok());
  HeadLossInputs in;
  in.hidden = torch::randn({2, 3, 4}, torch::requires_grad());
  in.head_weight = torch::randn({10, 5}, torch::requires_grad());
  in.labels = torch::zeros({2, 3}, torch::kLong);
  EXPECT_THAT(loss->ComputeOverHead(in),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("got hidden [2, 3, 4], head [10, 5]")));
  in.head_weight = torch::randn({10, 4}, torch::requires_grad());
  const TeacherTargets wrong =
      TeacherTargets::DenseFromLogits(torch::randn({2, 3, 12}), 1.0);
  in.teacher = &wrong;
  EXPECT_THAT(loss->ComputeOverHead(in),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("over 12 classes but the student's tokens "
                                 "are [2, 3] over 10")));
  in.teacher = nullptr;
  in.labels = torch::full({2, 3}, 10, torch::kLong);
  EXPECT_THAT(loss->ComputeOverHead(in),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("labels span [10, 10]")));
}

TEST(ComputeOverHeadErrorsTest, AllPositionsIgnoredIsZeroWithNoGradient) {
  auto loss = CompositeLoss::Create({{"hard_ce", 1.0, {}}});
  ASSERT_TRUE(loss.ok());
  HeadLossInputs in;
  in.hidden = torch::randn({1, 3, 4}, torch::requires_grad());
  in.head_weight = torch::randn({10, 4}, torch::requires_grad());
  in.labels = torch::full({1, 3}, kIgnoreLabel, torch::kLong);
  auto got = loss->ComputeOverHead(in);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->total.item<double>(), 0.0);
  EXPECT_EQ(got->terms.at("hard_ce"), 0.0);
  got->total.backward();
  EXPECT_EQ(in.hidden.grad().abs().sum().item<double>(), 0.0);
}

}  // namespace
}  // namespace distill::losses
