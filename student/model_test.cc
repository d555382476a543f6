#include "student/model.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "common/testing/scratch_dir.h"
#include "common/testing/status_matchers.h"

namespace distill::student {
namespace {

using ::distill::testing::IsOk;
using ::distill::testing::StatusIs;
using ::testing::HasSubstr;

const ZooInput kFashionMnist{{1, 28, 28}, 10};

std::unique_ptr<Model> Make(const std::string& arch,
                            std::map<std::string, double> options = {}) {
  auto m = Model::Create({arch, "", std::move(options)}, kFashionMnist);
  EXPECT_TRUE(m.ok()) << m.status();
  return std::move(m).value();
}

class ModelTest : public ::distill::testing::ScratchDirTest {
 protected:
  std::string TempPath(const std::string& name) const {
    return (dir_ / name).string();
  }
};

TEST_F(ModelTest, SaveAndLoadRestoresEveryParameterAndBuffer) {
  torch::manual_seed(1);
  auto a = Make("cnn_student");
  // Move BatchNorm statistics away from their initial values.
  a->forward(torch::randn({8, 1, 28, 28}) * 3 + 1);
  const std::string path = TempPath("a.pt");
  ASSERT_THAT(a->SaveFile(path), IsOk());

  torch::manual_seed(2);
  auto b = Make("cnn_student");
  ASSERT_THAT(b->LoadFile(path), IsOk());
  auto pa = a->named_parameters(), pb = b->named_parameters();
  ASSERT_EQ(pa.size(), pb.size());
  for (size_t i = 0; i < pa.size(); ++i) {
    EXPECT_TRUE(torch::equal(pa[i].second, pb[i].second)) << pa[i].first;
  }
  auto ba = a->named_buffers(), bb = b->named_buffers();
  ASSERT_EQ(ba.size(), bb.size());
  for (size_t i = 0; i < ba.size(); ++i) {
    EXPECT_TRUE(torch::equal(ba[i].second, bb[i].second)) << ba[i].first;
  }
}

TEST_F(ModelTest, LoadingAnotherArchitectureIsRefused) {
  auto teacher = Make("cnn_teacher");
  const std::string path = TempPath("teacher.pt");
  ASSERT_THAT(teacher->SaveFile(path), IsOk());
  auto student = Make("cnn_student");
  EXPECT_THAT(student->LoadFile(path),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       HasSubstr("was written for model 'cnn_teacher' but the "
                                 "config asks for 'cnn_student'")));
}

TEST_F(ModelTest, SameArchitectureWithOtherOptionsNamesTheTensor) {
  auto wide = Make("cnn_student", {{"hidden", 64}});
  const std::string path = TempPath("wide.pt");
  ASSERT_THAT(wide->SaveFile(path), IsOk());
  auto narrow = Make("cnn_student");
  EXPECT_THAT(narrow->LoadFile(path),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       HasSubstr("tensor 'fc1.weight' has shape [64, 1568]")));
}

TEST_F(ModelTest, MissingAndCorruptFilesAreReported) {
  auto m = Make("mlp");
  EXPECT_THAT(m->LoadFile(TempPath("nope.pt")),
              StatusIs(absl::StatusCode::kNotFound,
                       HasSubstr("weights file not found")));
  const std::string junk = TempPath("junk.pt");
  std::ofstream(junk) << "not a zip archive";
  EXPECT_THAT(m->LoadFile(junk),
              StatusIs(absl::StatusCode::kDataLoss,
                       HasSubstr("is not a weights file written by distill")));
}

TEST_F(ModelTest, SaveFileLeavesNoTemporaryBehind) {
  auto m = Make("mlp");
  const std::string path = TempPath("clean.pt");
  ASSERT_THAT(m->SaveFile(path), IsOk());
  for (const auto& e : std::filesystem::directory_iterator(
           std::filesystem::path(path).parent_path())) {
    EXPECT_EQ(e.path().string().find(".tmp."), std::string::npos) << e.path();
  }
}

TEST_F(ModelTest, MissingTorchScriptFileIsNotFound) {
  EXPECT_THAT(Model::Create({"", TempPath("absent.ts.pt"), {}}, kFashionMnist),
              StatusIs(absl::StatusCode::kNotFound,
                       HasSubstr("TorchScript model file not found")));
}

}  // namespace
}  // namespace distill::student
