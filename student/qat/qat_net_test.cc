#include "student/qat/qat_net.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "common/testing/status_matchers.h"
#include "student/qat/fake_quant.h"

namespace distill::student::qat {
namespace {

using ::distill::testing::IsOk;
using ::distill::testing::StatusIs;
using ::testing::HasSubstr;

const ZooInput kMnist{{1, 28, 28}, 10};

std::shared_ptr<ZooModule> Zoo(const std::string& arch, uint64_t seed,
                               std::map<std::string, double> options = {}) {
  torch::manual_seed(seed);
  auto model = CreateZooModel(arch, options, kMnist);
  EXPECT_TRUE(model.ok()) << model.status();
  // Non-trivial BatchNorm statistics, as after training.
  torch::NoGradGuard no_grad;
  for (auto& b : (*model)->named_buffers()) {
    if (b.key().find("running_mean") != std::string::npos)
      b.value().normal_(0, 0.3);
    if (b.key().find("running_var") != std::string::npos)
      b.value().uniform_(0.5, 2);
  }
  return *model;
}

float MaxDiff(const torch::Tensor& a, const torch::Tensor& b) {
  return (a - b).abs().max().item<float>();
}

// A Linear -> BatchNorm1d -> ReLU -> Linear model (no zoo model has
// Linear+BatchNorm, but the stage folds it where present).
class LinearBnImpl : public ZooModule {
 public:
  LinearBnImpl()
      : fc1_(register_module("fc1", torch::nn::Linear(784, 32))),
        bn_(register_module("bn", torch::nn::BatchNorm1d(32))),
        fc2_(register_module("fc2", torch::nn::Linear(32, 10))) {}
  torch::Tensor forward(torch::Tensor x) override {
    return fc2_(torch::relu(bn_(fc1_(x.flatten(1)))));
  }
  std::vector<LayerOp> Layers() override {
    return {{LayerOp::Kind::kFlatten, "", nullptr},
            {LayerOp::Kind::kLinear, "fc1", fc1_.ptr()},
            {LayerOp::Kind::kBatchNorm1d, "bn", bn_.ptr()},
            {LayerOp::Kind::kRelu, "", nullptr},
            {LayerOp::Kind::kLinear, "fc2", fc2_.ptr()}};
  }

 private:
  torch::nn::Linear fc1_;
  torch::nn::BatchNorm1d bn_;
  torch::nn::Linear fc2_;
};

// A BatchNorm with no layer before it to fold into.
class LoneBatchNormImpl : public ZooModule {
 public:
  LoneBatchNormImpl() : bn_(register_module("bn", torch::nn::BatchNorm2d(1))) {}
  torch::Tensor forward(torch::Tensor x) override { return bn_(x); }
  std::vector<LayerOp> Layers() override {
    return {{LayerOp::Kind::kBatchNorm2d, "bn", bn_.ptr()}};
  }

 private:
  torch::nn::BatchNorm2d bn_;
};

TEST(QatNetTest, FloatEvalEqualsTheZooModel) {
  for (const std::string arch : {"cnn_student", "mlp", "cnn_teacher"}) {
    auto zoo = Zoo(arch, 1);
    zoo->eval();
    auto net = QatNet::Create(*zoo, {});
    ASSERT_THAT(net, IsOk());
    torch::NoGradGuard no_grad;
    torch::Tensor x = torch::randn({6, 1, 28, 28});
    EXPECT_LT(MaxDiff((*net)->forward(x), zoo->forward(x)), 1e-4) << arch;
  }
}

TEST(QatNetTest, QuantizableLayersAreConvsAndLinearsInOrder) {
  auto zoo = Zoo("cnn_student", 1);
  EXPECT_EQ(
      QatNet::QuantizableLayers(*zoo),
      (std::vector<std::string>{"stage1.conv0", "stage2.conv0", "fc1", "fc2"}));
}

// Before the freeze, train mode folds the batch statistics: the output and
// the updated running statistics equal LibTorch's Conv2d -> BatchNorm2d in
// train mode on an identical model.
TEST(QatNetTest, TrainModeFoldsBatchStatisticsLikeBatchNorm) {
  auto reference = Zoo("cnn_student", 2, {{"dropout", 0}});
  auto zoo = Zoo("cnn_student", 2, {{"dropout", 0}});
  auto net = QatNet::Create(*zoo, {});
  ASSERT_THAT(net, IsOk());
  reference->train();
  (*net)->train(true);
  torch::Tensor x = torch::randn({16, 1, 28, 28});
  torch::Tensor expected = reference->forward(x);
  torch::Tensor got = (*net)->forward(x);
  EXPECT_LT(MaxDiff(got, expected), 1e-4);
  auto ref_buffers = reference->named_buffers();
  for (const auto& b : zoo->named_buffers()) {
    EXPECT_LT(MaxDiff(b.value().to(torch::kFloat),
                      ref_buffers[b.key()].to(torch::kFloat)),
              1e-5)
        << b.key();
  }
}

TEST(QatNetTest, LinearBatchNormIsFoldedToo) {
  torch::manual_seed(5);
  auto reference = std::make_shared<LinearBnImpl>();
  torch::manual_seed(5);
  auto model = std::make_shared<LinearBnImpl>();
  auto net = QatNet::Create(*model, {});
  ASSERT_THAT(net, IsOk());
  torch::Tensor x = torch::randn({12, 1, 28, 28});
  reference->train();
  (*net)->train(true);
  EXPECT_LT(MaxDiff((*net)->forward(x), reference->forward(x)), 1e-4);
  reference->eval();
  (*net)->train(false);
  torch::NoGradGuard no_grad;
  EXPECT_LT(MaxDiff((*net)->forward(x), reference->forward(x)), 1e-4);
}

// After the freeze, train mode uses (and keeps) the running statistics.
TEST(QatNetTest, FrozenBatchNormUsesRunningStatisticsInTrainMode) {
  auto zoo = Zoo("cnn_student", 3, {{"dropout", 0}});
  auto net = QatNet::Create(*zoo, {});
  ASSERT_THAT(net, IsOk());
  torch::Tensor mean_before =
      zoo->named_buffers()["stage1.bn0.running_mean"].clone();
  (*net)->FreezeBatchNorm();
  (*net)->train(true);
  torch::Tensor x = torch::randn({8, 1, 28, 28});
  torch::Tensor got = (*net)->forward(x);
  zoo->eval();
  torch::NoGradGuard no_grad;
  EXPECT_LT(MaxDiff(got, zoo->forward(x)), 1e-4);
  EXPECT_TRUE(torch::equal(zoo->named_buffers()["stage1.bn0.running_mean"],
                           mean_before));
}

TEST(QatNetTest, UnknownSkipLayerListsTheLayers) {
  auto zoo = Zoo("cnn_student", 1);
  QatNetOptions options;
  options.skip_layers = {"fc9"};
  EXPECT_THAT(
      QatNet::Create(*zoo, options),
      StatusIs(absl::StatusCode::kInvalidArgument,
               "'fc9' is not a Conv2d or Linear layer of the model; its "
               "layers: stage1.conv0, stage2.conv0, fc1, fc2"));
}

TEST(QatNetTest, BatchNormWithoutALayerBeforeItIsRefused) {
  LoneBatchNormImpl model;
  EXPECT_THAT(
      QatNet::Create(model, {}),
      StatusIs(absl::StatusCode::kInvalidArgument,
               HasSubstr("BatchNorm 'bn' follows no Conv2d or Linear")));
}

TEST(QatNetTest, FakeQuantNeedsCalibration) {
  auto zoo = Zoo("mlp", 1);
  auto net = QatNet::Create(*zoo, {});
  ASSERT_THAT(net, IsOk());
  EXPECT_THAT((*net)->SetFakeQuant(true),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       HasSubstr("layer 'fc1' has observed no input yet")));
}

// A calibrated net: every scale is positive (also for a dead output
// channel), the INT8 simulation stays close to float, skipped layers have
// no scales, and gradients reach the weights through the fake quantizers.
TEST(QatNetTest, CalibratedNetHasPositiveScalesAndTrains) {
  auto zoo = Zoo("cnn_student", 4);
  {
    torch::NoGradGuard no_grad;
    zoo->named_parameters()["stage1.conv0.weight"][3].zero_();  // dead channel
  }
  QatNetOptions options;
  options.skip_layers = {"fc2"};
  auto made = QatNet::Create(*zoo, options);
  ASSERT_THAT(made, IsOk());
  QatNet& net = **made;
  EXPECT_EQ(net.quantized_layers(),
            (std::vector<std::string>{"stage1.conv0", "stage2.conv0", "fc1"}));
  EXPECT_EQ(net.skipped_layers(), std::vector<std::string>{"fc2"});
  torch::Tensor x = torch::randn({32, 1, 28, 28});
  torch::Tensor float_out;
  {
    torch::NoGradGuard no_grad;
    net.SetObserving(true);
    float_out = net.forward(x);
    net.SetObserving(false);
  }
  ASSERT_THAT(net.SetFakeQuant(true), IsOk());
  for (const ExportStep& step : net.ExportPlan()) {
    if (step.kind != ExportStep::Kind::kConv &&
        step.kind != ExportStep::Kind::kGemm) {
      continue;
    }
    if (step.layer.name == "fc2") {
      EXPECT_FALSE(step.layer.quantized);
      continue;
    }
    EXPECT_TRUE(step.layer.quantized);
    EXPECT_GT(step.layer.weight_scales.min().item<float>(), 0)
        << step.layer.name;
    EXPECT_GT(step.layer.input_scale, 0) << step.layer.name;
    if (step.layer.name == "stage1.conv0") {
      EXPECT_EQ(step.layer.weight_scales[3].item<float>(), kMinScale);
    }
  }
  {
    torch::NoGradGuard no_grad;
    torch::Tensor q = net.forward(x);
    EXPECT_GT(MaxDiff(q, float_out), 0);  // quantization changed something
    EXPECT_LT(MaxDiff(q, float_out), 0.1 * float_out.abs().max().item<float>());
  }
  net.train(true);
  net.forward(x).pow(2).mean().backward();
  torch::Tensor grad = zoo->named_parameters()["stage2.conv0.weight"].grad();
  ASSERT_TRUE(grad.defined());
  EXPECT_GT(grad.abs().sum().item<float>(), 0);
}

}  // namespace
}  // namespace distill::student::qat
