// The `distill` binary as a user runs it: bad input of every kind gets one
// clear error line and a non-zero exit, loses nothing already written, and
// a stopped run resumes to exactly the weights of an uninterrupted one.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "common/testing/process.h"
#include "common/testing/run_files.h"
#include "common/testing/scratch_dir.h"
#include "common/testing/status_matchers.h"
#include "common/testing/weights.h"
#include "student/model.h"

namespace {

namespace fs = std::filesystem;
using ::distill::testing::IsOk;
using ::testing::HasSubstr;

constexpr char kDataset[] = "/usr/share/datasets/fashion-mnist";

using ::distill::testing::BinDir;
using ::distill::testing::kFashionMnistInput;
using ::distill::testing::LoadWeights;
using ::distill::testing::MaxDifference;
using ::distill::testing::Outcome;
using ::distill::testing::Process;
using ::distill::testing::ReadFile;
using ::distill::testing::RunShell;
using ::distill::testing::ScratchDirTest;
using ::distill::testing::Summary;
using ::distill::testing::Tensors;
using ::distill::testing::WaitForFile;

class CliTest : public ScratchDirTest {
 protected:
  // Runs `distill args`; a non-empty `input` is a shell command whose
  // output is piped into it. A crash reads as a negative exit code.
  Outcome Run(const std::string& args, const std::string& input = "") {
    return RunShell(
        (input.empty() ? "" : input + " | ") + BinDir() + "/distill " + args,
        dir_);
  }

  // Every file under `root` with its contents.
  static std::map<std::string, std::string> Snapshot(const fs::path& root) {
    std::map<std::string, std::string> files;
    for (const auto& e : fs::recursive_directory_iterator(root)) {
      if (e.is_regular_file()) files[e.path().string()] = ReadFile(e.path());
    }
    return files;
  }

  // A finished short run whose checkpoint the bad-input tests must not touch.
  fs::path RunWithCheckpoint() {
    fs::path config = Write("good.pbtxt", R"pb(
      mode: TRAIN
      student { arch: "mlp" }
      data { train_limit: 256 test_limit: 128 }
      batch_size: 64 epochs: 2 threads: 1
    )pb");
    fs::path run = dir_ / "run";
    Outcome o = Run("--quiet --config " + config.string() + " --run_dir " +
                    run.string() + " --stop_after_steps 3");
    EXPECT_EQ(o.exit_code, 0) << o.err;
    return run;
  }

  // Runs `config_text` against a run directory holding a checkpoint and
  // expects exactly `error` and an untouched run directory.
  void ExpectRefused(const std::string& config_text, const std::string& error) {
    fs::path run = RunWithCheckpoint();
    auto before = Snapshot(run);
    ASSERT_FALSE(before.empty());
    fs::path config = Write("bad.pbtxt", config_text);
    Outcome o = Run("--config " + config.string() + " --run_dir " +
                    run.string() + " --resume");
    EXPECT_EQ(o.exit_code, 1) << o.err;
    EXPECT_EQ(o.err, "distill: error: " + error + "\n");
    EXPECT_EQ(Snapshot(run), before);
  }
};

TEST_F(CliTest, UnknownConfigField) {
  const std::string text =
      "mode: TRAIN\nepochz: 3\nstudent { arch: \"mlp\" }\n";
  ExpectRefused(text, (dir_ / "bad.pbtxt").string() +
                          ":2:7: Message type \"distill.v1.JobConfig\" has no "
                          "field named \"epochz\".");
}

TEST_F(CliTest, WrongFieldType) {
  ExpectRefused(
      "mode: TRAIN\nstudent { arch: \"mlp\" }\nbatch_size: 1.5\n",
      (dir_ / "bad.pbtxt").string() + ":3:13: Expected integer, got: 1.5");
}

TEST_F(CliTest, NegativeLearningRate) {
  ExpectRefused(
      "mode: TRAIN\nstudent { arch: \"mlp\" }\noptimizer {\n  lr: -0.01\n}\n",
      (dir_ / "bad.pbtxt").string() +
          ":4: optimizer.lr must be > 0 (got -0.01)");
}

TEST_F(CliTest, MissingDataFile) {
  fs::path data = dir_ / "data";
  fs::create_directories(data);
  fs::copy(fs::path(kDataset) / "train-labels-idx1-ubyte.gz", data);
  ExpectRefused("mode: TRAIN\nstudent { arch: \"mlp\" }\ndata { dir: \"" +
                    data.string() + "\" }\n",
                (data / "train-images-idx3-ubyte.gz").string() +
                    ": no such file (nor " +
                    (data / "train-images-idx3-ubyte").string() + ")");
}

TEST_F(CliTest, TruncatedIdxFile) {
  fs::path data = dir_ / "data";
  fs::create_directories(data);
  for (const char* name :
       {"train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz"}) {
    fs::copy(fs::path(kDataset) / name, data);
  }
  // The real training images, decompressed and cut off mid-way.
  gzFile in =
      gzopen((fs::path(kDataset) / "train-images-idx3-ubyte.gz").c_str(), "rb");
  ASSERT_NE(in, nullptr);
  std::string bytes(16 + 1000 * 784 + 100, '\0');
  ASSERT_EQ(gzread(in, bytes.data(), bytes.size()),
            static_cast<int>(bytes.size()));
  gzclose(in);
  std::ofstream(data / "train-images-idx3-ubyte", std::ios::binary) << bytes;
  ExpectRefused("mode: TRAIN\nstudent { arch: \"mlp\" }\ndata { dir: \"" +
                    data.string() + "\" }\n",
                (data / "train-images-idx3-ubyte").string() +
                    ": truncated: expected 47040000 bytes of data, found " +
                    std::to_string(1000 * 784 + 100));
}

TEST_F(CliTest, TeacherWithOtherClassCount) {
  fs::path teacher = dir_ / "teacher12.pt";
  const std::string make =
      "/usr/bin/python3 " + std::string(DISTILL_SOURCE_DIR) +
      "/tests/testdata/make_torchscript.py " + teacher.string() + " 12";
  if (std::system(("/usr/bin/python3 -c 'import torch' 2>/dev/null")) != 0) {
    GTEST_SKIP() << "/usr/bin/python3 has no torch";
  }
  ASSERT_EQ(std::system(make.c_str()), 0);
  ExpectRefused(
      "mode: DISTILL\nstudent { arch: \"mlp\" }\nteacher { model { "
      "torchscript: \"" +
          teacher.string() + "\" } }\n",
      "teacher 'torchscript:teacher12.pt' outputs 12 classes but the "
      "data has 10");
}

TEST_F(CliTest, CheckpointFromAnotherArchitecture) {
  // ExpectRefused first writes this checkpoint with model 'mlp'.
  const std::string ckpt =
      (dir_ / "run" / "checkpoints" / "ckpt-000000003.pt").string();
  ExpectRefused(
      "mode: TRAIN\nstudent { arch: \"cnn_student\" }\n"
      "data { train_limit: 256 test_limit: 128 }\n",
      "checkpoint " + ckpt +
          " was written for model 'mlp' but the config asks for "
          "'cnn_student'");
}

// Loss plugins: every loading error stops the job before it starts.
constexpr char kPluginJob[] =
    "mode: DISTILL\nstudent { arch: \"mlp\" }\n"
    "teacher { model { arch: \"mlp\" weights: \"t.pt\" } }\n";

TEST_F(CliTest, MissingPluginInConfig) {
  ExpectRefused(std::string(kPluginJob) + "plugins: \"/nonexistent/libx.so\"\n",
                "loss plugin not found: /nonexistent/libx.so");
}

TEST_F(CliTest, PluginLossWithUnknownParameter) {
  ExpectRefused(std::string(kPluginJob) + "plugins: \"" +
                    DISTILL_COSINE_KD_PLUGIN + "\"\n" +
                    "loss { name: \"cosine_kd\" params { key: \"epsilon\" "
                    "value: 0.1 } }\n",
                (dir_ / "bad.pbtxt").string() +
                    ":5: loss[0].params has 'epsilon', which loss 'cosine_kd' "
                    "does not take; its parameters: eps");
}

TEST_F(CliTest, PluginLossWithParameterOutOfBounds) {
  ExpectRefused(std::string(kPluginJob) + "plugins: \"" +
                    DISTILL_COSINE_KD_PLUGIN + "\"\n" +
                    "loss { name: \"cosine_kd\" params { key: \"eps\" "
                    "value: 2 } }\n",
                (dir_ / "bad.pbtxt").string() +
                    ":5: loss[0].params[eps] must be in [0, 1] (got 2)");
}

TEST_F(CliTest, PluginLossIsUnknownWithoutThePlugin) {
  ExpectRefused(
      std::string(kPluginJob) + "loss { name: \"cosine_kd\" }\n",
      (dir_ / "bad.pbtxt").string() +
          ":4: loss[0].name unknown loss 'cosine_kd'; known losses: "
          "dkd, generalized_jsd, hard_ce, js, kd_kl, mse_logits, reverse_kl, "
          "soft_ce, tvd");
}

TEST_F(CliTest, LibraryThatIsNotAPlugin) {
  fs::path config = Write("job.pbtxt", kPluginJob);
  Outcome o =
      Run(std::string("--loss_plugin ") + DISTILL_NOT_A_PLUGIN + " --config " +
          config.string() + " --run_dir " + (dir_ / "run").string());
  EXPECT_EQ(o.exit_code, 1);
  EXPECT_EQ(o.err, std::string("distill: error: ") + DISTILL_NOT_A_PLUGIN +
                       " is not a distill loss plugin: it has no "
                       ".distill_plugin section (DISTILL_LOSS_PLUGIN puts one "
                       "there since plugin API version 3; rebuild a plugin "
                       "made for an older release against this release's "
                       "headers)\n");
  EXPECT_FALSE(fs::exists(dir_ / "run"));
}

// The flag is repeatable (Abseil alone would keep only the last one): the
// second load of the same plugin is refused as a duplicate loss name.
TEST_F(CliTest, RepeatedPluginFlagLoadsEachAndRefusesDuplicates) {
  fs::path config = Write("job.pbtxt", kPluginJob);
  const std::string plugin = DISTILL_COSINE_KD_PLUGIN;
  Outcome o = Run("--loss_plugin " + plugin + " --loss_plugin=" + plugin +
                  " --config " + config.string() + " --run_dir " +
                  (dir_ / "run").string());
  EXPECT_EQ(o.exit_code, 1);
  EXPECT_EQ(o.err, "distill: error: loss plugin " + plugin +
                       " registers loss 'cosine_kd', which is already "
                       "registered\n");
}

TEST_F(CliTest, MissingConfigFile) {
  Outcome o = Run("--config " + (dir_ / "absent.pbtxt").string());
  EXPECT_EQ(o.exit_code, 1);
  EXPECT_EQ(o.err, "distill: error: config file not found: " +
                       (dir_ / "absent.pbtxt").string() + "\n");
}

// Two epochs straight and (stop mid-epoch 2, --resume) give identical
// weights: model, optimizer, data position, augmentation and dropout RNG
// are all restored.
TEST_F(CliTest, ResumeIsExact) {
  const std::string config = Write("job.pbtxt", R"pb(
    mode: TRAIN
    student { arch: "cnn_student" options { key: "dropout" value: 0.3 } }
    data { train_limit: 640 test_limit: 128 augment { enabled: true } }
    batch_size: 64 epochs: 2 threads: 1 seed: 7
    optimizer { type: SGD lr: 0.05 }
    lr_schedule { type: COSINE warmup_steps: 3 }
  )pb")
                                 .string();
  const std::string straight = (dir_ / "straight").string();
  const std::string resumed = (dir_ / "resumed").string();
  Outcome a = Run("--quiet --config " + config + " --run_dir " + straight);
  ASSERT_EQ(a.exit_code, 0) << a.err;
  Outcome b1 = Run("--quiet --config " + config + " --run_dir " + resumed +
                   " --stop_after_steps 13");
  ASSERT_EQ(b1.exit_code, 0) << b1.err;
  ASSERT_FALSE(fs::exists(resumed + "/summary.json"));
  Outcome b2 =
      Run("--config " + config + " --run_dir " + resumed + " --resume");
  ASSERT_EQ(b2.exit_code, 0) << b2.err;
  EXPECT_THAT(b2.out, HasSubstr("resuming from"));

  const distill::student::ModelSpec spec{"cnn_student", "", {{"dropout", 0.3}}};
  const auto a_weights =
      LoadWeights(spec, straight + "/model.pt", Tensors::kParametersAndBuffers);
  EXPECT_EQ(
      MaxDifference(a_weights, LoadWeights(spec, resumed + "/model.pt",
                                           Tensors::kParametersAndBuffers)),
      0.0);
  // And the weights did move: a run that trained nothing would also match.
  torch::manual_seed(7);
  auto fresh = distill::student::Model::Create(spec, kFashionMnistInput);
  ASSERT_THAT(fresh, IsOk());
  EXPECT_FALSE(torch::equal((*fresh)->parameters()[0], a_weights[0].second));
}

// SIGTERM (what Slurm and launchers send): the run finishes its step,
// writes a checkpoint, exits 128+15, and --resume completes the job.
TEST_F(CliTest, SigtermCheckpointsAtTheNextStepAndResumes) {
  const std::string config = Write("job.pbtxt", R"pb(
    mode: TRAIN
    student { arch: "cnn_teacher" }
    data { train_limit: 1600 test_limit: 100 }
    batch_size: 32 epochs: 1 threads: 1
    checkpoint_every_steps: 3
  )pb")
                                 .string();
  const fs::path run = dir_ / "run";
  Process distill = Process::Start(
      {BinDir() + "/distill", "--config", config, "--run_dir", run.string()},
      dir_ / "term.out", dir_ / "term.err");
  // Signal once the first checkpoint shows the run is under way (a bounded
  // wait for that event).
  const fs::path first = run / "checkpoints" / "ckpt-000000003.pt";
  ASSERT_TRUE(WaitForFile(first, std::chrono::minutes(2)));
  distill.Signal(SIGTERM);
  // A negative code would mean a signal killed it instead of a clean stop.
  EXPECT_EQ(distill.Wait(), 128 + SIGTERM) << ReadFile(dir_ / "term.err");
  EXPECT_THAT(ReadFile(dir_ / "term.out"),
              HasSubstr("stopped after a checkpoint at "));
  EXPECT_FALSE(fs::exists(run / "summary.json"));

  Outcome o =
      Run("--config " + config + " --run_dir " + run.string() + " --resume");
  ASSERT_EQ(o.exit_code, 0) << o.err;
  EXPECT_THAT(o.out, HasSubstr("resuming from"));
  const nlohmann::json summary = Summary(run);
  EXPECT_EQ(summary["steps"], 50);
}

// A config from a pipe (`--config <(...)`, `--config /dev/stdin`) can be
// read only once; the plugins list and the config come from that one read.
TEST_F(CliTest, ConfigFromAPipeIsReadOnce) {
  const fs::path config = Write("piped.pbtxt", R"pb(
    mode: TRAIN
    student { arch: "mlp" }
    data { train_limit: 128 test_limit: 64 }
    batch_size: 64 epochs: 1 threads: 1
  )pb");
  const fs::path run = dir_ / "piped";
  Outcome o = Run("--quiet --config /dev/stdin --run_dir " + run.string(),
                  "cat " + config.string());
  EXPECT_EQ(o.exit_code, 0) << o.err;
  EXPECT_EQ(o.err, "");
  const nlohmann::json summary = Summary(run);
  EXPECT_EQ(summary["steps"], 2);
}

}  // namespace
