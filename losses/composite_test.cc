#include "losses/composite.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <string>

#include "common/testing/status_matchers.h"
#include "losses/teacher_targets.h"

namespace distill::losses {
namespace {

using ::distill::testing::IsOk;
using ::distill::testing::StatusIs;
using ::testing::HasSubstr;

double Single(const std::string& name, const LossParams& params,
              const LossInputs& inputs) {
  auto loss = LossRegistry::Global().Create(name, params);
  EXPECT_THAT(loss, IsOk());
  auto value = (*loss)->Compute(inputs);
  EXPECT_THAT(value, IsOk());
  return value->item<double>();
}

TEST(CompositeLossTest, WeightsCombineAndTermsAreReported) {
  torch::manual_seed(11);
  const torch::Tensor s =
      torch::randn({4, 6}, torch::kDouble).requires_grad_(true);
  const TeacherTargets teacher = TeacherTargets::DenseFromLogits(
      torch::randn({4, 6}, torch::kDouble), 2.0);
  LossInputs inputs;
  inputs.student_logits = s;
  inputs.teacher = &teacher;
  inputs.labels = torch::randint(0, 6, {4}, torch::kLong);

  absl::StatusOr<CompositeLoss> composite = CompositeLoss::Create(
      {{"kd_kl", 0.9, {}}, {"hard_ce", 0.1, {{"label_smoothing", 0.2}}}});
  ASSERT_THAT(composite, IsOk());
  EXPECT_TRUE(composite->needs_teacher());
  EXPECT_THAT(composite->term_names(),
              ::testing::ElementsAre("kd_kl", "hard_ce"));

  absl::StatusOr<CompositeResult> result = composite->Compute(inputs);
  ASSERT_THAT(result, IsOk());
  const double kd = Single("kd_kl", {}, inputs);
  const double ce = Single("hard_ce", {{"label_smoothing", 0.2}}, inputs);
  EXPECT_NEAR(result->total.item<double>(), 0.9 * kd + 0.1 * ce, 1e-12);
  EXPECT_NEAR(result->terms.at("kd_kl"), kd, 1e-12);
  EXPECT_NEAR(result->terms.at("hard_ce"), ce, 1e-12);
  EXPECT_EQ(result->terms.size(), 2u);
  ASSERT_TRUE(result->total.requires_grad());
  result->total.backward();
  EXPECT_TRUE(s.grad().defined());
}

// A LINEAR weight schedule 0.2 -> 1 at step 5 of 10 weighs the term 0.6;
// a term without a schedule keeps its weight.
TEST(CompositeLossTest, WeightScheduleFollowsTheStep) {
  const TeacherTargets teacher = TeacherTargets::DenseFromLogits(
      torch::tensor({{1.0, 0.0, -1.0}}, torch::kDouble), 2.0);
  LossInputs inputs;
  inputs.student_logits = torch::tensor({{0.0, 0.5, 0.0}}, torch::kDouble);
  inputs.teacher = &teacher;
  inputs.labels = torch::tensor({1}, torch::kLong);
  TermSpec kd{"kd_kl", 123.0, {}};
  kd.weight_schedule = ValueSchedule{ValueSchedule::Type::kLinear, 0.2, 1.0};
  absl::StatusOr<CompositeLoss> composite =
      CompositeLoss::Create({kd, {"hard_ce", 0.5, {}}});
  ASSERT_THAT(composite, IsOk());
  const double kl = Single("kd_kl", {}, inputs);
  const double ce = Single("hard_ce", {}, inputs);
  inputs.step = 5;
  inputs.total_steps = 10;
  auto mid = composite->Compute(inputs);
  ASSERT_THAT(mid, IsOk());
  EXPECT_NEAR(mid->total.item<double>(), 0.6 * kl + 0.5 * ce, 1e-12);
  EXPECT_NEAR(mid->terms.at("kd_kl"), kl, 1e-12);
  inputs.step = 0;
  auto first = composite->Compute(inputs);
  ASSERT_THAT(first, IsOk());
  EXPECT_NEAR(first->total.item<double>(), 0.2 * kl + 0.5 * ce, 1e-12);

  TermSpec bad{"kd_kl", 1.0, {}};
  bad.weight_schedule = ValueSchedule{ValueSchedule::Type::kCosine, 1.0, -2.0};
  EXPECT_THAT(CompositeLoss::Create({bad}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("loss term 'kd_kl' has a weight schedule "
                                 "from 1 to -2; weights must be finite and "
                                 ">= 0")));
}

TEST(CompositeLossTest, NeedsTeacherOnlyWhenATermDoes) {
  absl::StatusOr<CompositeLoss> supervised =
      CompositeLoss::Create({{"hard_ce", 1.0, {}}});
  ASSERT_THAT(supervised, IsOk());
  EXPECT_FALSE(supervised->needs_teacher());
}

TEST(CompositeLossTest, MissingTeacherNamesTheTerm) {
  absl::StatusOr<CompositeLoss> composite =
      CompositeLoss::Create({{"hard_ce", 0.5, {}}, {"js", 0.5, {}}});
  ASSERT_THAT(composite, IsOk());
  LossInputs inputs;
  inputs.student_logits = torch::randn({2, 3});
  inputs.labels = torch::zeros({2}, torch::kLong);
  EXPECT_THAT(composite->Compute(inputs),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       HasSubstr("loss term 'js': js needs teacher targets")));
}

TEST(CompositeLossTest, BadConfigurationsAreRefused) {
  EXPECT_THAT(
      CompositeLoss::Create({}),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("no terms")));
  EXPECT_THAT(CompositeLoss::Create({{"kd_kl", 1.0, {}}, {"kd_kl", 0.5, {}}}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("loss term 'kd_kl' is listed twice")));
  EXPECT_THAT(CompositeLoss::Create({{"kd_kl", -0.1, {}}}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("loss term 'kd_kl' has weight -0.1")));
  EXPECT_THAT(CompositeLoss::Create({{"kd_kl", std::nan(""), {}}}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("must be finite")));
  EXPECT_THAT(
      CompositeLoss::Create({{"kl", 1.0, {}}}),
      StatusIs(absl::StatusCode::kNotFound, HasSubstr("unknown loss 'kl'")));
  EXPECT_THAT(CompositeLoss::Create({{"hard_ce", 1.0, {{"smoothing", 0.1}}}}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("has no parameter 'smoothing'")));
}

}  // namespace
}  // namespace distill::losses
