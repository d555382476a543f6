#include "student/zoo.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "common/testing/status_matchers.h"

namespace distill::student {
namespace {

using ::distill::testing::StatusIs;
using ::testing::HasSubstr;

const ZooInput kMnist{{1, 28, 28}, 10};

int64_t CountParams(ZooModule& m) {
  int64_t n = 0;
  for (const auto& p : m.parameters()) n += p.numel();
  return n;
}

TEST(ZooTest, EveryEntryBuildsAndMapsImagesToClassLogits) {
  for (const auto& entry : ZooEntries()) {
    if (entry.language_model) continue;  // gpt_test
    auto model = CreateZooModel(entry.arch, {}, kMnist);
    ASSERT_TRUE(model.ok()) << entry.arch << ": " << model.status();
    (*model)->eval();
    torch::Tensor out = (*model)->forward(torch::randn({3, 1, 28, 28}));
    EXPECT_EQ(out.sizes(), torch::IntArrayRef({3, 10})) << entry.arch;
  }
}

// Layers() is what the QAT stage and the ONNX exporter rebuild a model from:
// running its ops one by one must give forward()'s logits.
TEST(ZooTest, LayersRunInOrderEqualForward) {
  for (const auto& entry : ZooEntries()) {
    if (entry.language_model) continue;  // no layer-by-layer form
    auto model = CreateZooModel(entry.arch, {}, {{1, 28, 28}, 10});
    ASSERT_TRUE(model.ok()) << model.status();
    (*model)->eval();
    torch::NoGradGuard no_grad;
    torch::Tensor x = torch::randn({4, 1, 28, 28});
    torch::Tensor y = x;
    for (const LayerOp& op : (*model)->Layers()) {
      switch (op.kind) {
        case LayerOp::Kind::kConv2d:
          y = op.module->as<torch::nn::Conv2dImpl>()->forward(y);
          break;
        case LayerOp::Kind::kBatchNorm2d:
          y = op.module->as<torch::nn::BatchNorm2dImpl>()->forward(y);
          break;
        case LayerOp::Kind::kBatchNorm1d:
          y = op.module->as<torch::nn::BatchNorm1dImpl>()->forward(y);
          break;
        case LayerOp::Kind::kLinear:
          y = op.module->as<torch::nn::LinearImpl>()->forward(y);
          break;
        case LayerOp::Kind::kRelu:
          y = torch::relu(y);
          break;
        case LayerOp::Kind::kMaxPool2x2:
          y = torch::max_pool2d(y, 2);
          break;
        case LayerOp::Kind::kFlatten:
          y = y.flatten(1);
          break;
        case LayerOp::Kind::kDropout:
          break;
      }
    }
    EXPECT_TRUE(torch::equal(y, (*model)->forward(x))) << entry.arch;
  }
}

TEST(ZooTest, SizesMatchTheirRoles) {
  auto student = CreateZooModel("cnn_student", {}, kMnist);
  auto teacher = CreateZooModel("cnn_teacher", {}, kMnist);
  ASSERT_TRUE(student.ok() && teacher.ok());
  EXPECT_LT(CountParams(**student), 100000);
  EXPECT_GE(CountParams(**teacher), 1000000);
  // The teacher has BatchNorm (running statistics) and dropout.
  EXPECT_FALSE((*teacher)->buffers().empty());
}

TEST(ZooTest, MlpParameterCountMatchesItsLayers) {
  auto mlp = CreateZooModel("mlp", {{"hidden1", 100}, {"hidden2", 50}}, kMnist);
  ASSERT_TRUE(mlp.ok());
  const int64_t expected = (784 * 100 + 100) + (100 * 50 + 50) + (50 * 10 + 10);
  EXPECT_EQ(CountParams(**mlp), expected);
}

TEST(ZooTest, UnknownArchitectureListsKnownOnes) {
  EXPECT_THAT(CreateZooModel("resnet9000", {}, kMnist),
              StatusIs(absl::StatusCode::kNotFound,
                       HasSubstr("unknown model architecture 'resnet9000'; "
                                 "known architectures: cnn_student, "
                                 "cnn_teacher, gpt, mlp")));
}

TEST(ZooTest, BadOptionsAreNamed) {
  EXPECT_THAT(CreateZooModel("mlp", {{"width", 3}}, kMnist),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("model 'mlp' has no option 'width'")));
  EXPECT_THAT(
      CreateZooModel("cnn_student", {{"dropout", 1.5}}, kMnist),
      StatusIs(absl::StatusCode::kInvalidArgument,
               HasSubstr("option 'dropout' = 1.5 is outside [0, 0.9]")));
}

}  // namespace
}  // namespace distill::student
