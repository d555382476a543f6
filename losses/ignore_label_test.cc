// Positions labelled kIgnoreLabel count in no built-in loss: each equals
// LibTorch's own reduction over the other positions.
#include <gtest/gtest.h>

#include "common/labels.h"
#include "losses/registry.h"

namespace distill::losses {
namespace {

double Value(const std::string& name, const LossInputs& in) {
  auto loss = LossRegistry::Global().Create(name, {});
  EXPECT_TRUE(loss.ok()) << loss.status();
  auto value = (*loss)->Compute(in);
  EXPECT_TRUE(value.ok()) << value.status();
  return value.ok() ? value->item<double>() : -1;
}

TEST(IgnoreLabelTest, HardCeMatchesCrossEntropysIgnoreIndex) {
  torch::manual_seed(3);
  LossInputs in;
  in.student_logits = torch::randn({2, 6, 11});
  in.labels = torch::randint(0, 11, {2, 6}, torch::kLong);
  in.labels[1].slice(0, 3) = kIgnoreLabel;
  const double expected =
      torch::nn::functional::cross_entropy(
          in.student_logits.reshape({12, 11}), in.labels.reshape({12}),
          torch::nn::functional::CrossEntropyFuncOptions().ignore_index(
              kIgnoreLabel))
          .item<double>();
  EXPECT_NEAR(Value("hard_ce", in), expected, 1e-6);
}

TEST(IgnoreLabelTest, KdKlAveragesOverTheCountedPositionsOnly) {
  torch::manual_seed(4);
  const double t = 2.0;
  LossInputs in;
  in.student_logits = torch::randn({1, 5, 7});
  in.labels = torch::tensor({int64_t{1}, kIgnoreLabel, int64_t{3}, kIgnoreLabel,
                             int64_t{0}})
                  .reshape({1, 5});
  const TeacherTargets teacher =
      TeacherTargets::DenseFromLogits(torch::randn({1, 5, 7}), t);
  in.teacher = &teacher;
  const torch::Tensor keep = torch::tensor({0, 2, 4});
  const torch::Tensor log_q =
      torch::log_softmax(in.student_logits[0].index_select(0, keep) / t, -1);
  const double expected =
      torch::nn::functional::kl_div(
          log_q, teacher.probs[0].index_select(0, keep),
          torch::nn::functional::KLDivFuncOptions().reduction(
              torch::kBatchMean))
          .item<double>() *
      t * t;
  EXPECT_NEAR(Value("kd_kl", in), expected, 1e-6);
}

}  // namespace
}  // namespace distill::losses
