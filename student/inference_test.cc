#include "student/inference.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "absl/strings/str_replace.h"

namespace distill::student {
namespace {

const ZooInput kImages{{1, 28, 28}, 10};

std::shared_ptr<Model> TrainedLooking(
    const std::string& arch, std::map<std::string, double> options = {}) {
  auto m = Model::Create({arch, "", std::move(options)}, kImages);
  EXPECT_TRUE(m.ok()) << m.status();
  std::shared_ptr<Model> model = std::move(m).value();
  // Give every BatchNorm statistics and affine parameters far from their
  // initial (identity) values, so a wrong fold shows.
  torch::NoGradGuard no_grad;
  model->train(true);
  for (int i = 0; i < 3; ++i)
    model->forward(torch::randn({16, 1, 28, 28}) * 2 + 0.5);
  for (auto& [name, p] : model->named_parameters()) {
    if (name.find(".bn") != std::string::npos) p.uniform_(0.5, 1.5);
  }
  model->train(false);
  return model;
}

double MaxRelativeError(const torch::Tensor& got, const torch::Tensor& want) {
  return ((got - want).abs().max() / want.abs().max().clamp_min(1e-6))
      .item<double>();
}

struct Case {
  std::string arch;
  std::map<std::string, double> options;
  std::string how;
  // Names the case in test output instead of its bytes.
  friend void PrintTo(const Case& c, std::ostream* os) { *os << c.arch; }
};

class PreparedMatchesEager : public ::testing::TestWithParam<Case> {};

TEST_P(PreparedMatchesEager, OnRandomImages) {
  torch::manual_seed(7);
  const Case& c = GetParam();
  std::shared_ptr<Model> model = TrainedLooking(c.arch, c.options);
  const torch::Tensor x = torch::randn({32, 1, 28, 28});
  torch::Tensor want;
  {
    torch::NoGradGuard no_grad;
    want = model->forward(x);
  }
  for (bool onednn : {true, false}) {
    auto prepared = InferenceModel::Create(model, {onednn});
    ASSERT_TRUE(prepared.ok()) << prepared.status();
    EXPECT_TRUE((*prepared)->prepared());
    EXPECT_EQ(
        (*prepared)->how(),
        onednn ? c.how : absl::StrReplaceAll(c.how, {{" for oneDNN", ""}}));
    torch::Tensor got = (*prepared)->forward(x);
    EXPECT_FALSE(got.requires_grad());
    ASSERT_EQ(got.sizes(), want.sizes());
    EXPECT_LT(MaxRelativeError(got, want), 1e-5) << "oneDNN " << onednn;
  }
}

INSTANTIATE_TEST_SUITE_P(
    Zoo, PreparedMatchesEager,
    ::testing::Values(
        Case{"cnn_teacher",
             {},
             "prepared for oneDNN: 2 conv, 2 linear, 2 BatchNorm folded"},
        Case{"cnn_teacher",
             {{"convs_per_stage", 2}, {"hidden", 256}},
             "prepared for oneDNN: 4 conv, 2 linear, 4 BatchNorm folded"},
        Case{"cnn_student",
             {},
             "prepared for oneDNN: 2 conv, 2 linear, 2 BatchNorm folded"},
        Case{"mlp",
             {{"dropout", 0.5}},
             "prepared for oneDNN: 3 linear, 0 BatchNorm folded"}),
    [](const ::testing::TestParamInfo<Case>& info) {
      return info.param.arch + (info.param.options.empty() ? "" : "_options");
    });

TEST(InferenceModelTest, LaterChangesToTheModelDoNotReachThePreparedCopy) {
  torch::manual_seed(3);
  std::shared_ptr<Model> model = TrainedLooking("cnn_student");
  auto prepared = InferenceModel::Create(model);
  ASSERT_TRUE(prepared.ok()) << prepared.status();
  const torch::Tensor x = torch::randn({4, 1, 28, 28});
  const torch::Tensor before = (*prepared)->forward(x);
  {
    torch::NoGradGuard no_grad;
    for (auto& p : model->parameters()) p.zero_();
  }
  EXPECT_TRUE(torch::equal((*prepared)->forward(x), before));
}

TEST(InferenceModelTest, TargetsCanFeedTheStudentsBackward) {
  // The trainer keeps teacher targets for the loss's backward pass: they
  // must be ordinary tensors, not inference-mode ones.
  torch::manual_seed(4);
  auto prepared = InferenceModel::Create(TrainedLooking("mlp"));
  ASSERT_TRUE(prepared.ok()) << prepared.status();
  torch::Tensor targets = (*prepared)->forward(torch::randn({4, 1, 28, 28}));
  EXPECT_FALSE(targets.is_inference());
  torch::Tensor w = torch::ones({4, 10}, torch::requires_grad());
  (w * targets).sum().backward();
  EXPECT_TRUE(torch::allclose(w.grad(), targets));
}

}  // namespace
}  // namespace distill::student
