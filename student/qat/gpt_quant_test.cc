#include "student/qat/gpt_quant.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <string>

namespace distill::student::qat {
namespace {

GptOptions Tiny(int64_t d_model = 32) {
  GptOptions o;
  o.vocab_size = 64;
  o.context = 8;
  o.layers = 1;
  o.heads = 2;
  o.d_model = d_model;
  o.d_ff = 64;
  return o;
}

// A second model holding `model`'s weights with every matrix rounded by
// `round` (written here, not taken from the code under test).
Gpt RoundedCopy(Gpt& model,
                const std::function<torch::Tensor(torch::Tensor)>& round) {
  Gpt copy(model->options());
  torch::NoGradGuard no_grad;
  auto from = model->named_parameters();
  for (auto& p : copy->named_parameters()) {
    torch::Tensor value = from[p.key()].clone();
    if (value.dim() == 2) value = round(value);
    p.value().copy_(value);
  }
  return copy;
}

// Per row: scale max|w| / 127, values round(w / scale) * scale.
torch::Tensor RoundInt8(torch::Tensor w) {
  const torch::Tensor scale = w.abs().amax(1, true) / 127;
  return torch::round(w / scale).clamp(-127, 127) * scale;
}

// Per group of 32 along a row: scale max|w| / 7, codes in [-8, 7].
torch::Tensor RoundInt4Groups(torch::Tensor w) {
  const torch::Tensor g = w.reshape({w.size(0), -1, 32});
  const torch::Tensor scale = g.abs().amax(2, true) / 7;
  return (torch::round(g / scale).clamp(-8, 7) * scale).reshape(w.sizes());
}

GptQuantOptions Groups32() {
  GptQuantOptions options;
  options.group = {4, 32, true};
  return options;
}

torch::Tensor Tokens() {
  return torch::tensor({3, 17, 40, 63, 0, 9, 22, 5}, torch::kLong)
      .reshape({1, 8});
}

// Every weight matrix (the tied head and the embeddings included) goes
// through the quantizer: the model computes what a float model with the
// rounded weights computes. A matrix left out changes the logits by far
// more than the tolerance.
TEST(GptQuantTest, Int8WeightsReachEveryMatrix) {
  torch::manual_seed(3);
  Gpt model(Tiny());
  auto quant = GptQuant::Create(model, Groups32());
  ASSERT_TRUE(quant.ok()) << quant.status();
  (*quant)->SetMode(GptQuantMode::kInt8);
  torch::NoGradGuard no_grad;
  const torch::Tensor got = model->forward(Tokens());
  const torch::Tensor want = RoundedCopy(model, RoundInt8)->forward(Tokens());
  EXPECT_LT((got - want).abs().max().item<double>(), 1e-4);
  (*quant)->SetMode(GptQuantMode::kFloat);
  Gpt plain = RoundedCopy(model, [](torch::Tensor w) { return w; });
  EXPECT_LT((model->forward(Tokens()) - plain->forward(Tokens()))
                .abs()
                .max()
                .item<double>(),
            1e-5);
  EXPECT_GT((want - plain->forward(Tokens())).abs().max().item<double>(), 1e-3);
}

TEST(GptQuantTest, FourBitGroupsReachEveryMatrix) {
  torch::manual_seed(4);
  Gpt model(Tiny());
  GptQuantOptions options;
  options.group = {4, 32, true};
  auto quant = GptQuant::Create(model, options);
  ASSERT_TRUE(quant.ok()) << quant.status();
  (*quant)->SetMode(GptQuantMode::kGroupwise);
  torch::NoGradGuard no_grad;
  const torch::Tensor got = model->forward(Tokens());
  const torch::Tensor want =
      RoundedCopy(model, RoundInt4Groups)->forward(Tokens());
  EXPECT_LT((got - want).abs().max().item<double>(), 1e-4);
}

// After calibration, the head's input (and every Linear's) is a whole
// multiple of its scale within [-128, 127].
TEST(GptQuantTest, CalibratedActivationsAreOnTheInt8Grid) {
  torch::manual_seed(5);
  Gpt model(Tiny());
  auto quant = GptQuant::Create(model, Groups32());
  ASSERT_TRUE(quant.ok());
  GptQuant& q = **quant;
  q.SetMode(GptQuantMode::kInt8);
  EXPECT_FALSE(q.Calibrated());
  torch::NoGradGuard no_grad;
  q.SetObserving(true);
  model->forward(Tokens());
  q.SetObserving(false);
  ASSERT_TRUE(q.Calibrated());
  q.SetActivationQuant(true);
  const torch::Tensor hidden = model->Hidden(Tokens(), nullptr);
  const torch::Tensor codes = hidden / q.ActivationScale("lm_head");
  EXPECT_LT((codes - codes.round()).abs().max().item<double>(), 1e-3);
  EXPECT_LE(codes.abs().max().item<double>(), 128.001);
  // The observer saw the float hidden state, so its largest value is
  // exactly representable at the edge of the range.
  EXPECT_NEAR(codes.abs().max().item<double>(), 127, 1e-3);
}

// Quantization-aware training: the loss reaches every parameter through
// the fake quantization (straight-through).
TEST(GptQuantTest, GradientsReachEveryParameter) {
  torch::manual_seed(6);
  Gpt model(Tiny());
  GptQuantOptions options;
  options.group = {4, 32, false};
  auto quant = GptQuant::Create(model, options);
  ASSERT_TRUE(quant.ok());
  (*quant)->SetMode(GptQuantMode::kGroupwise);
  const torch::Tensor logits = model->forward(Tokens());
  torch::nn::functional::cross_entropy(
      logits.reshape({-1, 64}), torch::roll(Tokens(), -1, 1).reshape({-1}))
      .backward();
  for (const auto& p : model->named_parameters()) {
    ASSERT_TRUE(p.value().grad().defined()) << p.key();
    EXPECT_GT(p.value().grad().abs().sum().item<double>(), 0) << p.key();
  }
}

// Counted by hand for Tiny(): matrices wte 64x32, wpe 8x32, qkv 96x32,
// attn.proj 32x32, fc 64x32, proj 32x64 (10,496 weights, 296 rows); 416
// bias and LayerNorm values.
TEST(GptQuantTest, WeightBytesCountEachForm) {
  Gpt model(Tiny());
  GptQuantOptions options;
  options.group = {4, 32, true};
  auto quant = GptQuant::Create(model, options);
  ASSERT_TRUE(quant.ok());
  EXPECT_EQ((*quant)->WeightBytes(GptQuantMode::kFloat), 4 * (10496 + 416));
  EXPECT_EQ((*quant)->WeightBytes(GptQuantMode::kInt8),
            10496 + 4 * 296 + 4 * 416);
  EXPECT_EQ((*quant)->WeightBytes(GptQuantMode::kGroupwise),
            10496 / 2 + 4 * (10496 / 32) + 4 * 416);
  options.group.symmetric = false;
  auto with_zeros = GptQuant::Create(model, options);
  ASSERT_TRUE(with_zeros.ok());
  EXPECT_EQ((*with_zeros)->WeightBytes(GptQuantMode::kGroupwise),
            10496 / 2 + 4 * (10496 / 32) + (10496 / 32) / 2 + 4 * 416);
}

TEST(GptQuantTest, GroupThatDoesNotDivideAWidthIsRefused) {
  Gpt model(Tiny(/*d_model=*/48));
  GptQuantOptions options;
  options.group = {4, 32, true};
  auto quant = GptQuant::Create(model, options);
  ASSERT_FALSE(quant.ok());
  EXPECT_EQ(quant.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(quant.status().message()).find("blocks.0.attn.qkv"),
            std::string::npos)
      << quant.status();
}

// The scaling search runs on the inputs of the matrices that only multiply:
// every Linear layer, and the head when it is not tied to the embedding;
// not the position table or a tied embedding. A LayerNorm gain of 30 on
// one channel gives the first qkv layer an input outlier, which the
// scaling must beat round-to-nearest on.
TEST(GptQuantTest, AwqSearchesTheMatricesThatOnlyMultiply) {
  for (bool tied : {true, false}) {
    SCOPED_TRACE(tied ? "tied head" : "own head");
    torch::manual_seed(7);
    GptOptions o = Tiny();
    o.tied_embedding = tied;
    Gpt model(o);
    torch::NoGradGuard no_grad;
    model->named_parameters()["blocks.0.ln1.weight"][5].fill_(30);
    auto quant = GptQuant::Create(model, Groups32());
    ASSERT_TRUE(quant.ok());
    GptQuant& q = **quant;
    q.StartCapture(64);
    for (int i = 0; i < 8; ++i) model->forward(Tokens());
    q.StopCapture();
    q.SetMode(GptQuantMode::kGroupwise);
    const auto searches = q.SearchAwq();
    std::vector<std::string> names;
    for (const auto& [name, search] : searches) names.push_back(name);
    std::vector<std::string> want = {"blocks.0.attn.qkv", "blocks.0.attn.proj",
                                     "blocks.0.fc", "blocks.0.proj"};
    if (!tied) want.push_back("lm_head");
    EXPECT_EQ(names, want);
    ASSERT_FALSE(searches.empty());
    EXPECT_LT(searches[0].second.error, 0.8 * searches[0].second.rtn_error);
    EXPECT_GT(searches[0].second.alpha, 0);
    EXPECT_TRUE(q.AwqScales("blocks.0.attn.qkv").defined());
    EXPECT_FALSE(q.AwqScales("wte").defined());
    EXPECT_FALSE(q.AwqScales("wpe").defined());
  }
}

}  // namespace
}  // namespace distill::student::qat
