#include "student/gpt.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "common/linear.h"
#include "common/testing/status_matchers.h"
#include "student/zoo.h"

namespace distill::student {
namespace {

using ::distill::testing::StatusIs;
using ::testing::HasSubstr;

std::shared_ptr<ZooModule> Tiny(std::map<std::string, double> options = {}) {
  options.emplace("layers", 2);
  options.emplace("heads", 2);
  options.emplace("d_model", 16);
  options.emplace("d_ff", 32);
  options.emplace("context", 12);
  auto model = CreateZooModel("gpt", options, {{8}, 50, /*tokens=*/true});
  EXPECT_TRUE(model.ok()) << model.status();
  (*model)->eval();
  return *model;
}

TEST(GptTest, ShapesParameterNamesAndCount) {
  torch::manual_seed(0);
  auto tied = Tiny();
  const torch::Tensor tokens = torch::randint(0, 50, {3, 8}, torch::kLong);
  EXPECT_EQ(tied->forward(tokens).sizes(), (std::vector<int64_t>{3, 8, 50}));
  std::vector<std::string> names;
  int64_t count = 0;
  for (const auto& p : tied->named_parameters()) {
    names.push_back(p.key());
    count += p.value().numel();
  }
  EXPECT_THAT(names, ::testing::Contains("blocks.1.attn.qkv.weight"));
  EXPECT_THAT(names, ::testing::Contains("ln_f.weight"));
  EXPECT_THAT(names, ::testing::Not(::testing::Contains("lm_head.weight")));
  // wte 50x16, wpe 12x16; per block: 2 LayerNorms (2x32), qkv 16x48+48,
  // proj 16x16+16, fc 16x32+32, proj 32x16+16; ln_f 32.
  const int64_t block = 64 + (768 + 48) + (256 + 16) + (512 + 32) + (512 + 16);
  EXPECT_EQ(count, 800 + 192 + 2 * block + 32);
  auto untied = Tiny({{"tied_embedding", 0}});
  EXPECT_EQ(untied->HeadWeight().sizes(), (std::vector<int64_t>{50, 16}));
  EXPECT_FALSE(
      untied->HeadWeight().is_same(untied->named_parameters()["wte.weight"]));
  EXPECT_TRUE(
      tied->HeadWeight().is_same(tied->named_parameters()["wte.weight"]));
}

TEST(GptTest, ForwardIsHiddenTimesTheHead) {
  torch::manual_seed(1);
  auto model = Tiny({{"tied_embedding", 0}});
  const torch::Tensor tokens = torch::randint(0, 50, {2, 8}, torch::kLong);
  torch::NoGradGuard no_grad;
  const torch::Tensor expected = torch::einsum(
      "nsh,vh->nsv", {model->Hidden(tokens, nullptr), model->HeadWeight()});
  EXPECT_TRUE(torch::allclose(model->forward(tokens), expected, 1e-5, 1e-6));
}

TEST(GptTest, APositionNeverSeesLaterTokens) {
  torch::manual_seed(2);
  auto model = Tiny();
  torch::Tensor a = torch::randint(0, 50, {1, 8}, torch::kLong);
  torch::Tensor b = a.clone();
  b[0][5] = (a[0][5].item<int64_t>() + 1) % 50;
  torch::NoGradGuard no_grad;
  const torch::Tensor la = model->forward(a), lb = model->forward(b);
  using torch::indexing::Slice;
  EXPECT_TRUE(
      torch::equal(la.index({0, Slice(0, 5)}), lb.index({0, Slice(0, 5)})));
  EXPECT_FALSE(torch::allclose(la.index({0, 5}), lb.index({0, 5})));
}

TEST(GptTest, TheKvCacheGivesTheFullForwardsLogits) {
  torch::manual_seed(3);
  auto model = Tiny();
  const torch::Tensor tokens = torch::randint(0, 50, {2, 10}, torch::kLong);
  torch::NoGradGuard no_grad;
  const torch::Tensor full = model->forward(tokens);
  KvCache cache;
  using torch::indexing::Slice;
  // A prompt of 4, then one token at a time.
  std::vector<torch::Tensor> steps = {
      torch::matmul(model->Hidden(tokens.index({Slice(), Slice(0, 4)}), &cache),
                    model->HeadWeight().t())};
  for (int64_t i = 4; i < 10; ++i) {
    steps.push_back(torch::matmul(
        model->Hidden(tokens.index({Slice(), Slice(i, i + 1)}), &cache),
        model->HeadWeight().t()));
  }
  EXPECT_EQ(cache.length(), 10);
  EXPECT_TRUE(torch::allclose(torch::cat(steps, 1), full, 1e-4, 1e-5));
  EXPECT_THROW(model->Hidden(tokens.index({Slice(), Slice(0, 3)}), &cache),
               c10::Error);  // 13 > context 12
}

// The oneDNN paths (common/linear.h's Linear, common/matmul.h's attention
// products) train the same model: one loss and its gradients, on the fast
// and on the plain path.
TEST(GptTest, FastLinearPathGivesThePlainLossAndGradients) {
  torch::manual_seed(5);
  auto model = Tiny();
  model->train();
  const torch::Tensor tokens = torch::randint(0, 50, {3, 8}, torch::kLong);
  const torch::Tensor labels = torch::randint(0, 50, {3 * 8}, torch::kLong);
  auto step = [&](bool fast) {
    SetFastLinear(fast);
    model->zero_grad();
    torch::Tensor loss = torch::nn::functional::cross_entropy(
        model->forward(tokens).reshape({-1, 50}), labels);
    loss.backward();
    SetFastLinear(true);
    std::vector<torch::Tensor> out = {loss.detach()};
    for (const auto& p : model->parameters()) out.push_back(p.grad().clone());
    return out;
  };
  const std::vector<torch::Tensor> plain = step(false);
  const std::vector<torch::Tensor> fast = step(true);
  ASSERT_EQ(plain.size(), fast.size());
  for (size_t i = 0; i < plain.size(); ++i) {
    EXPECT_TRUE(torch::allclose(fast[i], plain[i], 1e-4, 1e-5))
        << "tensor " << i;
  }
}

TEST(GptTest, RefusesImagesOptionsThatDoNotFitAndShortContexts) {
  EXPECT_THAT(CreateZooModel("gpt", {}, {{1, 28, 28}, 10}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("'gpt' is a language model but the data "
                                 "are images")));
  EXPECT_THAT(CreateZooModel("cnn_student", {}, {{64}, 8192, true}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("'cnn_student' is an image model but the "
                                 "data are token windows")));
  EXPECT_THAT(CreateZooModel("gpt", {{"heads", 3}}, {{64}, 100, true}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("heads 3 does not divide d_model 128")));
  EXPECT_THAT(CreateZooModel("gpt", {{"context", 32}}, {{64}, 100, true}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("context of 32 tokens but the data's "
                                 "windows are 64 long")));
}

}  // namespace
}  // namespace distill::student
