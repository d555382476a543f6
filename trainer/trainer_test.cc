#include "trainer/trainer.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <vector>

#include "common/testing/run_files.h"
#include "common/testing/scratch_dir.h"
#include "common/testing/status_matchers.h"

namespace distill::trainer {
namespace {

using ::distill::testing::IsOk;
using ::distill::testing::StatusIs;
using ::testing::DoubleNear;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

JobConfig Parse(const std::string& text, const std::string& run_dir) {
  auto c = ParseJobConfig(text, "test", run_dir);
  EXPECT_THAT(c, IsOk());
  return *c;
}

// A teacher that predicts a uniform distribution over `classes` classes.
class UniformTeacher final : public TeacherClient {
 public:
  explicit UniformTeacher(int64_t classes) : classes_(classes) {}
  absl::StatusOr<losses::TeacherTargets> Targets(const data::Batch& batch,
                                                 double t) override {
    ++calls;
    temperatures.push_back(t);
    return losses::TeacherTargets::DenseFromLogits(
        torch::zeros({batch.labels.size(0), classes_}), t);
  }
  int64_t num_classes() const override { return classes_; }
  std::string description() const override { return "uniform"; }
  int calls = 0;
  std::vector<double> temperatures;

 private:
  int64_t classes_;
};

// Each test's run folder is its scratch folder.
class TrainerTest : public ::distill::testing::ScratchDirTest {
 protected:
  std::string FreshDir(const std::string& name) const {
    const std::filesystem::path dir = dir_ / name;
    std::filesystem::create_directories(dir);
    return dir.string();
  }
};

TEST_F(TrainerTest, SupervisedTrainingLearnsAndWritesItsSummary) {
  const std::string dir = FreshDir("supervised");
  JobConfig c = Parse(R"pb(
    mode: TRAIN
    student { arch: "mlp" }
    data { train_limit: 2000 test_limit: 1000 }
    epochs: 2 batch_size: 50 threads: 1 seed: 3
    optimizer { lr: 0.05 }
  )pb",
                      dir);
  RunOptions options;
  options.verbose = false;
  auto result = RunJob(c, options);
  ASSERT_THAT(result, IsOk());
  // Ten classes: chance is 10%; a working loop gets far above it.
  EXPECT_GT(result->summary["test_accuracy"].get<double>(), 0.6);
  EXPECT_EQ(result->summary["steps"].get<int64_t>(), 80);
  EXPECT_EQ(result->summary["params"].get<int64_t>(),
            784 * 256 + 256 + 256 * 128 + 128 + 128 * 10 + 10);
  EXPECT_EQ(result->summary["per_class_accuracy"].size(), 10u);
  EXPECT_TRUE(std::filesystem::exists(dir + "/summary.json"));
  EXPECT_TRUE(std::filesystem::exists(dir + "/model.pt"));
  // One "train" record every 50 steps plus one "epoch" record per epoch.
  const std::vector<nlohmann::json> records =
      ::distill::testing::MetricsRecords(dir);
  for (const nlohmann::json& record : records) {
    EXPECT_TRUE(record.contains("type"));
  }
  EXPECT_GE(records.size(), 3u);
}

TEST_F(TrainerTest, TeacherWithAnotherClassCountIsRefusedBeforeTraining) {
  const std::string dir = FreshDir("mismatch");
  JobConfig c = Parse(R"pb(
    mode: DISTILL
    student { arch: "mlp" }
    teacher { model { arch: "cnn_teacher" weights: "unused.pt" } }
    data { train_limit: 100 test_limit: 100 }
  )pb",
                      dir);
  RunOptions options;
  options.verbose = false;
  auto teacher = std::make_shared<UniformTeacher>(12);
  options.teacher = teacher;
  EXPECT_THAT(RunJob(c, options),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       HasSubstr("teacher 'uniform' outputs 12 classes but the "
                                 "data has 10")));
  EXPECT_EQ(teacher->calls, 0);
  EXPECT_FALSE(std::filesystem::exists(dir + "/checkpoints"));
}

TEST_F(TrainerTest, DistillationAsksTheTeacherOncePerBatch) {
  const std::string dir = FreshDir("distill");
  JobConfig c = Parse(R"pb(
    mode: DISTILL
    student { arch: "mlp" }
    teacher { model { arch: "cnn_teacher" weights: "unused.pt" } }
    data { train_limit: 300 test_limit: 100 }
    batch_size: 100 epochs: 2 threads: 1
  )pb",
                      dir);
  RunOptions options;
  options.verbose = false;
  auto teacher = std::make_shared<UniformTeacher>(10);
  options.teacher = teacher;
  auto result = RunJob(c, options);
  ASSERT_THAT(result, IsOk());
  EXPECT_EQ(teacher->calls, 6);
  EXPECT_TRUE(result->summary["loss_terms"].contains("kd_kl"));
  EXPECT_TRUE(result->summary["loss_terms"].contains("hard_ce"));
}

// 4 steps with a LINEAR temperature schedule 4 -> 2: step s of 4 asks the
// teacher for T = 4 - 2 s / 4; a weight schedule is accepted alongside.
TEST_F(TrainerTest, TemperatureScheduleReachesTheTeacherEachStep) {
  const std::string dir = FreshDir("temperature_schedule");
  JobConfig c = Parse(R"pb(
    mode: DISTILL
    student { arch: "mlp" }
    teacher { model { arch: "cnn_teacher" weights: "unused.pt" } }
    data { train_limit: 200 test_limit: 100 }
    batch_size: 50 epochs: 1 threads: 1
    temperature: 9
    temperature_schedule { type: LINEAR start: 4 end: 2 }
    loss { name: "dkd" weight_schedule { type: COSINE start: 0 end: 1 } }
    loss { name: "hard_ce" }
  )pb",
                      dir);
  RunOptions options;
  options.verbose = false;
  auto teacher = std::make_shared<UniformTeacher>(10);
  options.teacher = teacher;
  auto result = RunJob(c, options);
  ASSERT_THAT(result, IsOk());
  EXPECT_THAT(teacher->temperatures,
              ElementsAre(DoubleNear(4.0, 1e-12), DoubleNear(3.5, 1e-12),
                          DoubleNear(3.0, 1e-12), DoubleNear(2.5, 1e-12)));
  EXPECT_TRUE(result->summary["loss_terms"].contains("dkd"));
}

TEST_F(TrainerTest, StopAfterStepsWritesACheckpointAndStops) {
  const std::string dir = FreshDir("stop");
  JobConfig c = Parse(R"pb(
    mode: TRAIN
    student { arch: "mlp" }
    data { train_limit: 500 test_limit: 100 }
    batch_size: 100 epochs: 3 threads: 1
  )pb",
                      dir);
  RunOptions options;
  options.verbose = false;
  options.stop_after_steps = 7;
  auto result = RunJob(c, options);
  ASSERT_THAT(result, IsOk());
  EXPECT_TRUE(result->stopped);
  EXPECT_THAT(result->checkpoint, HasSubstr("ckpt-000000007.pt"));
  EXPECT_FALSE(std::filesystem::exists(dir + "/summary.json"));
}

}  // namespace
}  // namespace distill::trainer
