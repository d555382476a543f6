#include "trainer/config.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include "absl/strings/match.h"
#include "common/testing/process.h"
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
  auto text = ReadConfigFile(path);
  ASSERT_THAT(text, IsOk());
  auto plugins = ConfigPlugins(*text, path);
  ASSERT_THAT(plugins, IsOk());
  EXPECT_THAT(*plugins, ElementsAre("a/libx.so", "/abs/liby.so"));
  EXPECT_THAT(LoadJobConfig(path),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr(path + ":8: loss[0].name unknown loss "
                                        "'from_plugin'")));
  std::remove(path.c_str());
}

TEST(ConfigTest, ReadingPluginsReportsSyntaxErrorsAndMissingFiles) {
  EXPECT_THAT(ConfigPlugins("plugins: 3\n", "job.pbtxt"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       StartsWith("job.pbtxt:1:10: Expected string")));
  EXPECT_THAT(ReadConfigFile("/nonexistent/job.pbtxt"),
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
               HasSubstr("job.pbtxt:9: temperature_schedule.end must be >= "
                         "0.001 (smaller ones overflow z / T) (got 0)")));
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

// Values that parse but overflow a cast or a softmax later: each is refused
// up front, naming the field and the bound.
TEST(ConfigTest, InfinitiesAndHugeValuesAreRefused) {
  const struct {
    const char* text;
    const char* error;
  } cases[] = {
      {"temperature: 1e-40",
       "temperature must be >= 0.001 (smaller ones overflow z / T) (got "
       "1e-40)"},
      {"temperature: 5e-324", "temperature must be >= 0.001"},
      {"temperature: inf", "temperature must be >= 0.001"},
      {"temperature_schedule { type: LINEAR start: 4 end: 1e-300 }",
       "temperature_schedule.end must be >= 0.001"},
      {"distributed { bucket_cap_mb: 1e300 }",
       "distributed.bucket_cap_mb must be in (0, 1048576] (got 1e+300)"},
      {"distributed { first_bucket_mb: inf }",
       "distributed.first_bucket_mb must be in (0, 1048576] (got inf)"},
      {"distributed { collective_timeout_seconds: inf }",
       "distributed.collective_timeout_seconds must be in (0, 31536000] (got "
       "inf)"},
      {"distributed { collective_timeout_seconds: 1e300 }",
       "distributed.collective_timeout_seconds must be in (0, 31536000]"},
      {"optimizer { weight_decay: inf }",
       "optimizer.weight_decay must be >= 0 (got inf)"},
      {"optimizer { type: ADAMW eps: inf }",
       "optimizer.eps must be > 0 (got inf)"},
      {"grad_clip_norm: inf",
       "grad_clip_norm must be >= 0 (0: no clipping) (got inf)"},
      {"epochs: 1000000000", "epochs must be in [1, 1000000] (got 1000000000)"},
      {"teacher { endpoints: \"h:1\" answer_timeout_seconds: 1e300 }",
       "teacher.answer_timeout_seconds must be in (0, 31536000]"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.text);
    std::string text = std::string(kValid) + c.text + "\n";
    if (absl::StrContains(c.text, "teacher {")) {
      text =
          "mode: DISTILL\nrun_dir: \"/tmp/x\"\n"
          "student { arch: \"cnn_student\" }\n" +
          std::string(c.text) + "\n";
    }
    EXPECT_THAT(
        ParseJobConfig(text, "job.pbtxt"),
        StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr(c.error)));
  }
}

// The launcher runs DISTILL configs with --teacher_endpoints; a config may
// leave the teacher section to it. Before, validation ran first and refused
// "teacher is required in mode DISTILL".
TEST(ConfigTest, TeacherFlagsSupplyTheTeacherSection) {
  ConfigOverrides overrides;
  overrides.teacher_endpoints = {"127.0.0.1:5001", "127.0.0.1:5002"};
  overrides.teacher_token_file = "/run/token";
  const std::string no_teacher =
      "mode: DISTILL\nrun_dir: \"/tmp/x\"\nstudent { arch: \"mlp\" }\n";
  auto config = ParseJobConfig(no_teacher, "job.pbtxt", overrides);
  ASSERT_THAT(config, IsOk());
  EXPECT_THAT(config->teacher().endpoints(),
              ElementsAre("127.0.0.1:5001", "127.0.0.1:5002"));
  EXPECT_EQ(config->teacher().token_file(), "/run/token");
  EXPECT_EQ(config->teacher().max_attempts(), 5);  // defaults applied after

  // An in-process teacher is replaced by the servers.
  config = ParseJobConfig(kValid, "job.pbtxt", overrides);
  ASSERT_THAT(config, IsOk());
  EXPECT_FALSE(config->teacher().has_model());
  EXPECT_EQ(config->teacher().endpoints_size(), 2);

  EXPECT_THAT(ParseJobConfig(no_teacher, "job.pbtxt"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("teacher is required in mode DISTILL")));
  EXPECT_THAT(
      ParseJobConfig("mode: TRAIN\nrun_dir: \"/tmp/x\"\n"
                     "student { arch: \"mlp\" }\n",
                     "job.pbtxt", overrides),
      StatusIs(absl::StatusCode::kInvalidArgument,
               "job.pbtxt: --teacher_endpoints, --teacher_token_file and "
               "--teacher_tls_ca apply to mode DISTILL only"));
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
  EXPECT_THAT(
      ParseJobConfig(base + "loss { name: \"hard_ce\" weight: -1 }", "c"),
      StatusIs(absl::StatusCode::kInvalidArgument,
               HasSubstr("loss[0].weight must be >= 0 (got -1)")));
}

TEST(ConfigTest, ModelArchitectureAndOptionsAreChecked) {
  EXPECT_THAT(
      ParseJobConfig("mode: TRAIN run_dir: \"r\"\nstudent {\n arch: \"vgg\"\n}",
                     "c"),
      StatusIs(absl::StatusCode::kInvalidArgument,
               HasSubstr("c:3: student.arch 'vgg' is not a known architecture; "
                         "known: cnn_student, cnn_teacher, gpt, mlp")));
  EXPECT_THAT(
      ParseJobConfig("mode: TRAIN run_dir: \"r\" student { arch: \"mlp\" "
                     "options { key: \"hidden1\" value: 0 } }",
                     "c"),
      StatusIs(
          absl::StatusCode::kInvalidArgument,
          HasSubstr("student.options[hidden1] must be in [1, 8192] (got 0)")));
}

TEST(ConfigTest, QatGetsDocumentedDefaults) {
  auto c = ParseJobConfig(
      std::string(kValid) + "optimizer { lr: 0.05 }\nqat {}\n", "job.pbtxt");
  ASSERT_THAT(c, IsOk());
  const auto& q = c->qat();
  EXPECT_EQ(q.calibration_batches(), 32);
  EXPECT_EQ(q.epochs(), 1);
  EXPECT_DOUBLE_EQ(q.lr(), 0.005);  // a tenth of optimizer.lr
  EXPECT_EQ(q.observer(), v1::QatConfig::MINMAX);
  EXPECT_DOUBLE_EQ(q.percentile(), 99.99);
  EXPECT_DOUBLE_EQ(q.averaging_constant(), 0.01);
  EXPECT_DOUBLE_EQ(q.freeze_bn_after_epochs(), 0.5);
  EXPECT_DOUBLE_EQ(q.freeze_observers_after_epochs(), 0.75);
  EXPECT_TRUE(q.teacher_guided());  // DISTILL has a teacher
  EXPECT_EQ(q.group_size(), 32);
  EXPECT_FALSE(q.group_zero_points());
  EXPECT_EQ(q.awq_rows(), 4096);

  auto train = ParseJobConfig(
      "mode: TRAIN run_dir: \"r\" student { arch: \"mlp\" } qat { epochs: 4 }",
      "c");
  ASSERT_THAT(train, IsOk());
  EXPECT_FALSE(train->qat().teacher_guided());
  EXPECT_DOUBLE_EQ(train->qat().freeze_bn_after_epochs(), 2);
  EXPECT_DOUBLE_EQ(train->qat().lr(), 0.01);  // SGD's default lr / 10
  auto no_qat = ParseJobConfig(kValid, "c");
  ASSERT_THAT(no_qat, IsOk());
  EXPECT_FALSE(no_qat->has_qat());
}

// Every QAT field out of range names its field and line.
TEST(ConfigTest, QatFieldsAreValidated) {
  const std::string base = std::string(kValid);  // 5 lines, "qat {" on 6
  struct Case {
    std::string field;
    std::string error;
  };
  const std::vector<Case> cases = {
      {"calibration_batches: 0",
       "qat.calibration_batches must be >= 1 (got 0)"},
      {"epochs: -1", "qat.epochs must be >= 0 (0: PTQ only) (got -1)"},
      {"lr: 0", "qat.lr must be > 0 (got 0)"},
      {"percentile: 0", "qat.percentile must be in (0, 100] (got 0)"},
      {"percentile: 100.5", "qat.percentile must be in (0, 100] (got 100.5)"},
      {"averaging_constant: 1.5",
       "qat.averaging_constant must be in (0, 1] (got 1.5)"},
      {"freeze_observers_after_epochs: -0.5",
       "qat.freeze_observers_after_epochs must be in [0, qat.epochs] = [0, 1] "
       "(got -0.5)"},
      {"freeze_bn_after_epochs: 2",
       "qat.freeze_bn_after_epochs must be in [0, qat.epochs] = [0, 1] (got "
       "2)"},
      {"skip_layers: \"\"", "qat.skip_layers[0] must name a layer"},
      {"group_size: 48", "qat.group_size must be 32, 64 or 128, not 48"},
      {"awq_rows: 8", "qat.awq_rows must be >= 16 (got 8)"},
  };
  for (const Case& c : cases) {
    EXPECT_THAT(
        ParseJobConfig(base + "qat {\n  " + c.field + "\n}\n", "job.pbtxt"),
        StatusIs(absl::StatusCode::kInvalidArgument, "job.pbtxt:7: " + c.error))
        << c.field;
  }
  EXPECT_THAT(
      ParseJobConfig(
          base + "qat {\n  skip_layers: \"fc1\"\n  skip_layers: \"fc1\"\n}\n",
          "job.pbtxt"),
      StatusIs(absl::StatusCode::kInvalidArgument,
               "job.pbtxt:8: qat.skip_layers[1] 'fc1' is listed twice"));
}

TEST(ConfigTest, QatModeRules) {
  EXPECT_THAT(
      ParseJobConfig("mode: TRAIN run_dir: \"r\" student { arch: \"mlp\" }\n"
                     "qat { teacher_guided: true }",
                     "c"),
      StatusIs(absl::StatusCode::kInvalidArgument,
               "c:2: qat.teacher_guided needs a teacher: mode DISTILL, or "
               "QUANTIZE with a `teacher`"));
  EXPECT_THAT(
      ParseJobConfig("mode: EVALUATE run_dir: \"r\" student { arch: \"mlp\" "
                     "weights: \"w.pt\" }\nqat {}",
                     "c"),
      StatusIs(absl::StatusCode::kInvalidArgument,
               "c:2: qat is not used in mode EVALUATE"));
  EXPECT_THAT(
      ParseJobConfig("mode: QUANTIZE run_dir: \"r\" student { arch: \"mlp\" "
                     "weights: \"w.pt\" }",
                     "c"),
      StatusIs(absl::StatusCode::kInvalidArgument,
               "c: qat is required in mode QUANTIZE"));
  // QUANTIZE with a teacher distills during fine-tuning by default.
  auto guided = ParseJobConfig(
      "mode: QUANTIZE run_dir: \"r\" student { arch: \"mlp\" weights: "
      "\"w.pt\" } teacher { model { arch: \"cnn_teacher\" weights: \"t.pt\" } "
      "} "
      "qat {}",
      "c");
  ASSERT_THAT(guided, IsOk());
  EXPECT_TRUE(guided->qat().teacher_guided());
  ASSERT_EQ(guided->loss_size(), 2);
  EXPECT_EQ(guided->loss(0).name(), "kd_kl");
  EXPECT_THAT(
      ParseJobConfig("mode: TRAIN run_dir: \"r\" student { arch: \"mlp\" } "
                     "teacher { model { arch: \"mlp\" weights: \"t.pt\" } }",
                     "c"),
      StatusIs(
          absl::StatusCode::kInvalidArgument,
          HasSubstr("teacher is only used in modes DISTILL and QUANTIZE")));
}

TEST(ConfigTest, MissingFileIsNotFound) {
  EXPECT_THAT(
      LoadJobConfig("/nonexistent/job.pbtxt"),
      StatusIs(absl::StatusCode::kNotFound,
               HasSubstr("config file not found: /nonexistent/job.pbtxt")));
}

// The configs the quickstarts and docs run are valid as shipped.
TEST(ConfigTest, EveryLaunchConfigLoads) {
  int loaded = 0;
  for (const auto& entry : std::filesystem::directory_iterator(
           std::filesystem::path(distill::testing::SourceDir()) /
           "launch/configs")) {
    if (entry.path().extension() != ".pbtxt") continue;
    SCOPED_TRACE(entry.path().string());
    EXPECT_THAT(LoadJobConfig(entry.path().string()).status(), IsOk());
    ++loaded;
  }
  EXPECT_GE(loaded, 10);
}

}  // namespace
}  // namespace distill::trainer
