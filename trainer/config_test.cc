#include "trainer/config.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <string>

#include "common/testing/status_matchers.h"

namespace distill::trainer {
namespace {

using ::distill::testing::IsOk;
using ::distill::testing::StatusIs;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::StartsWith;

constexpr char kValid[] = R"pb(
mode: DISTILL
run_dir: "/tmp/x"
student { arch: "cnn_student" }
teacher { model { arch: "cnn_teacher" weights: "t.pt" } }
)pb";

TEST(ConfigTest, ValidConfigGetsDocumentedDefaults) {
  auto c = ParseJobConfig(kValid, "job.pbtxt");
  ASSERT_THAT(c, IsOk());
  EXPECT_EQ(c->temperature(), 4.0);
  EXPECT_EQ(c->epochs(), 1);
  EXPECT_EQ(c->batch_size(), 128);
  EXPECT_EQ(c->data().dir(), "/usr/share/datasets/fashion-mnist");
  ASSERT_EQ(c->loss_size(), 2);
  EXPECT_EQ(c->loss(0).name(), "kd_kl");
  EXPECT_EQ(c->loss(0).weight(), 0.9);
  EXPECT_EQ(c->loss(1).name(), "hard_ce");
  EXPECT_EQ(c->optimizer().type(), v1::OptimizerConfig::SGD);
  EXPECT_EQ(c->optimizer().lr(), 0.1);
  EXPECT_EQ(c->optimizer().momentum(), 0.9);
}

TEST(ConfigTest, UnknownFieldNamesFileLineAndField) {
  EXPECT_THAT(
      ParseJobConfig("mode: TRAIN\nepochz: 3\n", "job.pbtxt"),
      StatusIs(absl::StatusCode::kInvalidArgument,
               HasSubstr("job.pbtxt:2:7: Message type \"distill.v1.JobConfig\" "
                         "has no field named \"epochz\"")));
}

// Plugins are read before validation: the loss below exists only once a
// plugin is loaded, and LoadJobConfig refuses it until then.
TEST(ConfigTest, PluginsAreReadAheadOfValidation) {
  const std::string path = ::testing::TempDir() + "/plugins_job.pbtxt";
  std::ofstream(path) << kValid << "plugins: \"a/libx.so\"\n"
                      << "plugins: \"/abs/liby.so\"\n"
                      << "loss { name: \"from_plugin\" }\n";
  auto plugins = ReadConfigPlugins(path);
  ASSERT_THAT(plugins, IsOk());
  EXPECT_THAT(*plugins, ElementsAre("a/libx.so", "/abs/liby.so"));
  EXPECT_THAT(LoadJobConfig(path),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr(path + ":8: loss[0].name unknown loss "
                                        "'from_plugin'")));
  std::remove(path.c_str());
}

TEST(ConfigTest, ReadingPluginsReportsSyntaxErrorsAndMissingFiles) {
  const std::string path = ::testing::TempDir() + "/bad_plugins_job.pbtxt";
  std::ofstream(path) << "plugins: 3\n";
  EXPECT_THAT(ReadConfigPlugins(path),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       StartsWith(path + ":1:10: Expected string")));
  std::remove(path.c_str());
  EXPECT_THAT(ReadConfigPlugins("/nonexistent/job.pbtxt"),
              StatusIs(absl::StatusCode::kNotFound,
                       HasSubstr("config file not found: "
                                 "/nonexistent/job.pbtxt")));
}

TEST(ConfigTest, SchedulesAreValidatedWithFieldAndLine) {
  EXPECT_THAT(ParseJobConfig(std::string(kValid) +
                                 "temperature_schedule { start: 4 end: 1 }\n",
                             "job.pbtxt"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("job.pbtxt:6: temperature_schedule.type is "
                                 "required: CONSTANT, LINEAR or COSINE")));
  EXPECT_THAT(
      ParseJobConfig(std::string(kValid) +
                         "temperature_schedule {\n type: COSINE\n start: 4\n"
                         " end: 0\n}\n",
                     "job.pbtxt"),
      StatusIs(absl::StatusCode::kInvalidArgument,
               HasSubstr("job.pbtxt:9: temperature_schedule.end must be > 0 "
                         "(got 0)")));
  EXPECT_THAT(
      ParseJobConfig(std::string(kValid) +
                         "loss { name: \"kd_kl\" weight_schedule { type: "
                         "LINEAR start: -1 end: 1 } }\n",
                     "job.pbtxt"),
      StatusIs(absl::StatusCode::kInvalidArgument,
               HasSubstr("job.pbtxt:6: loss[0].weight_schedule.start must be "
                         ">= 0 (got -1)")));
  auto ok = ParseJobConfig(
      std::string(kValid) +
          "temperature_schedule { type: LINEAR start: 4 end: 1 }\n"
          "loss { name: \"dkd\" weight_schedule { type: COSINE start: 0 "
          "end: 1 } }\nloss { name: \"hard_ce\" }\n",
      "job.pbtxt");
  EXPECT_THAT(ok, IsOk());
}

TEST(ConfigTest, WrongTypeIsAParseError) {
  EXPECT_THAT(ParseJobConfig("mode: TRAIN\nepochs: \"three\"\n", "job.pbtxt"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       StartsWith("job.pbtxt:2:9: Expected integer")));
}

TEST(ConfigTest, NegativeLearningRateNamesFieldAndLine) {
  std::string text = std::string(kValid) + "optimizer {\n  lr: -0.5\n}\n";
  EXPECT_THAT(ParseJobConfig(text, "job.pbtxt"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("job.pbtxt:7: optimizer.lr must be > 0 "
                                 "(got -0.5)")));
}

TEST(ConfigTest, RunDirFromTheCommandLineSatisfiesTheRequirement) {
  const char* text = "mode: TRAIN student { arch: \"mlp\" }";
  EXPECT_THAT(ParseJobConfig(text, "c"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("run_dir is required")));
  EXPECT_THAT(ParseJobConfig(text, "c", "/tmp/run"), IsOk());
}

TEST(ConfigTest, ModeRulesAreChecked) {
  EXPECT_THAT(ParseJobConfig("run_dir: \"r\" student { arch: \"mlp\" }", "c"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("mode is required")));
  EXPECT_THAT(
      ParseJobConfig("mode: DISTILL run_dir: \"r\" student { arch: \"mlp\" }",
                     "c"),
      StatusIs(absl::StatusCode::kInvalidArgument,
               HasSubstr("teacher is required in mode DISTILL")));
  EXPECT_THAT(
      ParseJobConfig("mode: DISTILL run_dir: \"r\" student { arch: \"mlp\" } "
                     "teacher { model { arch: \"cnn_teacher\" } }",
                     "c"),
      StatusIs(absl::StatusCode::kInvalidArgument,
               HasSubstr("teacher.model.weights is required")));
  EXPECT_THAT(
      ParseJobConfig("mode: TRAIN run_dir: \"r\" student { arch: \"mlp\" } "
                     "loss { name: \"kd_kl\" }",
                     "c"),
      StatusIs(absl::StatusCode::kInvalidArgument,
               HasSubstr("loss[0].name 'kd_kl' needs a teacher")));
}

TEST(ConfigTest, LossTermsAreCheckedAgainstTheRegistry) {
  std::string base = "mode: TRAIN run_dir: \"r\" student { arch: \"mlp\" }\n";
  EXPECT_THAT(ParseJobConfig(base + "loss { name: \"hard_cee\" }", "c"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("c:2: loss[0].name unknown loss 'hard_cee'; "
                                 "known losses: ")));
  EXPECT_THAT(
      ParseJobConfig(base + "loss { name: \"hard_ce\" params { key: \"smooth\" "
                            "value: 0.1 } }",
                     "c"),
      StatusIs(absl::StatusCode::kInvalidArgument,
               HasSubstr("has 'smooth', which loss 'hard_ce' does not take; "
                         "its parameters: label_smoothing")));
  EXPECT_THAT(ParseJobConfig(base + "loss { name: \"hard_ce\" weight: -1 }", "c"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("loss[0].weight must be >= 0 (got -1)")));
}

TEST(ConfigTest, ModelArchitectureAndOptionsAreChecked) {
  EXPECT_THAT(
      ParseJobConfig("mode: TRAIN run_dir: \"r\"\nstudent {\n arch: \"vgg\"\n}",
                     "c"),
      StatusIs(absl::StatusCode::kInvalidArgument,
               HasSubstr("c:3: student.arch 'vgg' is not a known architecture; "
                         "known: cnn_student, cnn_teacher, mlp")));
  EXPECT_THAT(
      ParseJobConfig("mode: TRAIN run_dir: \"r\" student { arch: \"mlp\" "
                     "options { key: \"hidden1\" value: 0 } }",
                     "c"),
      StatusIs(absl::StatusCode::kInvalidArgument,
               HasSubstr("student.options[hidden1] must be in [1, 8192] (got 0)")));
}

TEST(ConfigTest, MissingFileIsNotFound) {
  EXPECT_THAT(LoadJobConfig("/nonexistent/job.pbtxt"),
              StatusIs(absl::StatusCode::kNotFound,
                       HasSubstr("config file not found: /nonexistent/job.pbtxt")));
}

}  // namespace
}  // namespace distill::trainer
