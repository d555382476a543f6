// InProcessTeacher with several members (an ensemble): its targets are the
// mean of the members' softmax(z / T), each member computed here by the
// eager model, independently of the prepared forward the teacher runs.
#include "trainer/teacher/in_process_teacher.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <string>
#include <vector>

#include "common/testing/scratch_dir.h"
#include "common/testing/status_matchers.h"

namespace distill::trainer {
namespace {

using ::distill::testing::IsOk;
using ::distill::testing::StatusIs;
using ::testing::HasSubstr;

const student::ZooInput kInput{{1, 28, 28}, 10};

class InProcessTeacherTest : public ::distill::testing::ScratchDirTest {
 protected:
  // Saves freshly initialized weights of `spec` (seeded) and returns the file.
  std::string Weights(const student::ModelSpec& spec, int seed,
                      const std::string& name) {
    torch::manual_seed(seed);
    auto model = student::Model::Create(spec, kInput);
    EXPECT_THAT(model, IsOk());
    const std::string path = (dir_ / name).string();
    EXPECT_THAT((*model)->SaveFile(path), IsOk());
    return path;
  }

  // softmax(z / T) of the eager model loaded from `weights`, in eval mode.
  torch::Tensor EagerProbs(const student::ModelSpec& spec,
                           const std::string& weights,
                           const torch::Tensor& inputs, double t) {
    auto model = student::Model::Create(spec, kInput);
    EXPECT_THAT(model, IsOk());
    EXPECT_THAT((*model)->LoadFile(weights), IsOk());
    (*model)->train(false);
    torch::NoGradGuard no_grad;
    return torch::softmax((*model)->forward(inputs) / t, -1);
  }
};

student::ModelSpec Mlp(double hidden1 = 256) {
  student::ModelSpec spec;
  spec.arch = "mlp";
  spec.options = {{"hidden1", hidden1}};
  return spec;
}

TEST_F(InProcessTeacherTest, EnsembleAveragesTheMembersProbabilities) {
  const student::ModelSpec mlp = Mlp(), narrow = Mlp(64);
  const std::string a = Weights(mlp, 1, "a.pt"), b = Weights(mlp, 2, "b.pt"),
                    c = Weights(narrow, 3, "c.pt");
  auto teacher =
      InProcessTeacher::Create({{mlp, a}, {mlp, b}, {narrow, c}}, kInput);
  ASSERT_THAT(teacher, IsOk());
  EXPECT_EQ((*teacher)->num_classes(), 10);
  EXPECT_THAT((*teacher)->description(),
              HasSubstr("in-process ensemble of 3 ("));

  torch::manual_seed(7);
  data::Batch batch{torch::arange(16), torch::randn({16, 1, 28, 28}) * 3,
                    torch::zeros({16}, torch::kLong)};
  const double t = 2.5;
  auto targets = (*teacher)->Targets(batch, t);
  ASSERT_THAT(targets, IsOk());
  EXPECT_EQ(targets->form, losses::TeacherTargets::Form::kDense);
  EXPECT_EQ(targets->temperature, t);

  const torch::Tensor pa = EagerProbs(mlp, a, batch.inputs, t);
  const torch::Tensor pb = EagerProbs(mlp, b, batch.inputs, t);
  const torch::Tensor pc = EagerProbs(narrow, c, batch.inputs, t);
  const torch::Tensor expected = (pa + pb + pc) / 3;
  ASSERT_EQ(targets->probs.sizes(), expected.sizes());
  EXPECT_LT((targets->probs - expected).abs().max().item<double>(), 1e-5);
  EXPECT_LT((targets->probs.sum(-1) - 1).abs().max().item<double>(), 1e-5);
  // The members disagree, so no single member passes for the mean.
  for (const torch::Tensor& p : {pa, pb, pc}) {
    EXPECT_GT((p - expected).abs().max().item<double>(), 1e-3);
  }
}

TEST_F(InProcessTeacherTest, AMemberWithTheWrongWeightsIsNamed) {
  const std::string a = Weights(Mlp(), 1, "a.pt");
  const std::string narrow = Weights(Mlp(64), 2, "narrow.pt");
  EXPECT_THAT(InProcessTeacher::Create({{Mlp(), a}, {Mlp(), narrow}}, kInput),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       HasSubstr("loading the teacher (ensemble member 1)'s "
                                 "weights: tensor 'fc1.weight' has shape")));
  EXPECT_THAT(
      InProcessTeacher::Create({}, kInput),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("needs a model")));
}

}  // namespace
}  // namespace distill::trainer
