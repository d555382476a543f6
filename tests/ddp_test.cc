// Data-parallel `distill` ranks as separate processes over real Gloo on
// loopback: equivalence with one rank, a rank killed mid-run, resuming on
// another number of ranks, the same binary under torchrun, and a loss plugin
// loaded on every rank.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "common/testing/process.h"
#include "common/testing/run_files.h"
#include "common/testing/scratch_dir.h"
#include "common/testing/status_matchers.h"
#include "common/testing/weights.h"

namespace {

namespace fs = std::filesystem;
using ::distill::testing::IsOk;
using ::testing::HasSubstr;

using ::distill::testing::BinDir;
using ::distill::testing::ExpectLossTermWithin;
using ::distill::testing::FreePort;
using ::distill::testing::LoadWeights;
using ::distill::testing::Process;
using ::distill::testing::ReadFile;
using ::distill::testing::ScratchDirTest;
using ::distill::testing::Summary;
using ::distill::testing::TorchrunEnv;
using ::distill::testing::WaitForCheckpoint;
using ::distill::testing::WeightDistance;

// A `distill` rank as a child process with torchrun-style variables.
struct Rank {
  Process process;
  fs::path out, err;
};

class DdpTest : public ScratchDirTest {
 protected:
  Rank Start(int rank, int world, int port,
             const std::vector<std::string>& args) {
    Rank r;
    r.out = dir_ / ("rank" + std::to_string(rank) + "_" + std::to_string(port) +
                    ".out");
    r.err = dir_ / ("rank" + std::to_string(rank) + "_" + std::to_string(port) +
                    ".err");
    std::vector<std::string> argv = {BinDir() + "/distill"};
    argv.insert(argv.end(), args.begin(), args.end());
    r.process =
        Process::Start(argv, r.out, r.err, TorchrunEnv(rank, world, port));
    return r;
  }

  // Runs `world` ranks to completion; returns their exit codes (-signal
  // when a rank was killed).
  std::vector<int> RunRanks(int world, const std::vector<std::string>& args) {
    const int port = FreePort();
    last_.clear();
    for (int r = 0; r < world; ++r)
      last_.push_back(Start(r, world, port, args));
    std::vector<int> codes;
    for (auto& r : last_) codes.push_back(r.process.Wait());
    return codes;
  }

  std::string Err(int rank) { return ReadFile(last_[rank].err); }

  std::vector<Rank> last_;
};

// 8 steps on 2 ranks x 32 samples equal 8 steps on 1 rank x 64 samples:
// the shards interleave the same permutation and gradients are averaged.
TEST_F(DdpTest, TwoRanksMatchOneRankWithTheSameGlobalBatch) {
  const std::string config = Write("job.pbtxt", R"pb(
    mode: TRAIN
    student { arch: "mlp" }
    data { train_limit: 512 test_limit: 100 }
    batch_size: 64 epochs: 1 threads: 1 seed: 5
    optimizer { type: SGD lr: 0.1 momentum: 0.9 }
    distributed { first_bucket_mb: 0.05 bucket_cap_mb: 0.2 }
  )pb")
                                 .string();
  const fs::path one = dir_ / "one", two = dir_ / "two";
  auto codes1 =
      RunRanks(1, {"--quiet", "--config", config, "--run_dir", one.string()});
  ASSERT_EQ(codes1[0], 0) << Err(0);
  auto codes2 =
      RunRanks(2, {"--quiet", "--config", config, "--run_dir", two.string()});
  ASSERT_EQ(codes2[0], 0) << Err(0);
  ASSERT_EQ(codes2[1], 0) << Err(1);

  // Float sums in another order: agreement to ~1e-6 after 8 momentum steps.
  EXPECT_LT(WeightDistance("mlp", one / "model.pt", two / "model.pt"), 2e-5)
      << "largest parameter difference";
  const nlohmann::json summary = Summary(two);
  EXPECT_EQ(summary["steps"], 8);
  EXPECT_EQ(summary["ranks"], 2);
}

// With BatchNorm: 2 ranks x 32 equal 1 rank x 64 in 2 strided
// micro-batches, whose BatchNorm batches are exactly the ranks' shards.
TEST_F(DdpTest, BatchNormModelMatchesOneRankWithMicroBatches) {
  const std::string base = R"pb(
    mode: TRAIN
    student { arch: "cnn_student" options { key: "dropout" value: 0 } }
    data { train_limit: 384 test_limit: 100 }
    batch_size: 64 epochs: 1 threads: 1 seed: 9
    optimizer { type: SGD lr: 0.05 momentum: 0.9 }
  )pb";
  const std::string one_config =
      Write("one.pbtxt", base + "micro_batches: 2\n").string();
  const std::string two_config = Write("two.pbtxt", base).string();
  const fs::path one = dir_ / "one", two = dir_ / "two";
  auto codes1 = RunRanks(
      1, {"--quiet", "--config", one_config, "--run_dir", one.string()});
  ASSERT_EQ(codes1[0], 0) << Err(0);
  auto codes2 = RunRanks(
      2, {"--quiet", "--config", two_config, "--run_dir", two.string()});
  ASSERT_EQ(codes2[0], 0) << Err(0);
  ASSERT_EQ(codes2[1], 0) << Err(1);
  EXPECT_LT(WeightDistance("cnn_student", one / "model.pt", two / "model.pt"),
            2e-5)
      << "largest parameter difference";
  // The comparison has teeth: without micro-batches BatchNorm sees the
  // whole batch of 64 and the parameters come out measurably different.
  const fs::path whole = dir_ / "whole";
  auto codes3 = RunRanks(
      1, {"--quiet", "--config", two_config, "--run_dir", whole.string()});
  ASSERT_EQ(codes3[0], 0) << Err(0);
  EXPECT_GT(WeightDistance("cnn_student", one / "model.pt", whole / "model.pt"),
            1e-4);
}

// A rank that hangs (stopped, not dead): the other fails after the
// collective timeout with a message that says so.
TEST_F(DdpTest, HungRankTimesOut) {
  const std::string config = Write("job.pbtxt", R"pb(
    mode: TRAIN
    student { arch: "mlp" }
    data { train_limit: 6400 test_limit: 100 }
    batch_size: 32 epochs: 3 threads: 1
    checkpoint_every_steps: 5
    distributed { collective_timeout_seconds: 5 }
  )pb")
                                 .string();
  const fs::path run = dir_ / "run";
  const std::vector<std::string> args = {"--quiet", "--config", config,
                                         "--run_dir", run.string()};
  const int port = FreePort();
  Rank r0 = Start(0, 2, port, args), r1 = Start(1, 2, port, args);
  ASSERT_TRUE(WaitForCheckpoint(run, std::chrono::minutes(2)));
  r1.process.Signal(SIGSTOP);
  EXPECT_EQ(r0.process.Wait(), 1);
  r1.process.Signal(SIGKILL);
  r1.process.Wait();
  const std::string err = ReadFile(r0.err);
  EXPECT_THAT(err, HasSubstr("distill: error: rank 0: "));
  EXPECT_THAT(err, HasSubstr("timed out waiting for the other ranks"));
}

// A rank that dies mid-run: the survivor stops with a message naming itself
// and the collective, well within the timeout; the last checkpoint loads;
// --resume completes the job.
TEST_F(DdpTest, KilledRankStopsTheOthersAndTheJobResumes) {
  const std::string config = Write("job.pbtxt", R"pb(
    mode: TRAIN
    student { arch: "cnn_teacher" }
    data { train_limit: 3200 test_limit: 200 }
    batch_size: 32 epochs: 2 threads: 1
    checkpoint_every_steps: 5
    distributed { collective_timeout_seconds: 60 }
  )pb")
                                 .string();
  const fs::path run = dir_ / "run";
  const std::vector<std::string> args = {"--quiet", "--config", config,
                                         "--run_dir", run.string()};
  const int port = FreePort();
  Rank r0 = Start(0, 2, port, args), r1 = Start(1, 2, port, args);
  // Kill rank 1 once rank 0 has written its first checkpoint (bounded wait
  // for that event, not a sleep standing in for it).
  ASSERT_TRUE(WaitForCheckpoint(run, std::chrono::minutes(3)));
  r1.process.Signal(SIGKILL);
  const auto killed_at = std::chrono::steady_clock::now();
  EXPECT_EQ(r1.process.Wait(), -SIGKILL);
  EXPECT_EQ(r0.process.Wait(), 1);
  const double seconds = std::chrono::duration<double>(
                             std::chrono::steady_clock::now() - killed_at)
                             .count();
  EXPECT_LT(seconds, 60) << "the survivor waited for the full timeout";
  const std::string err = ReadFile(r0.err);
  EXPECT_THAT(err, HasSubstr("distill: error: rank 0: "));
  EXPECT_THAT(err, HasSubstr(" failed: "));
  EXPECT_FALSE(fs::exists(run / "summary.json"));

  // Every checkpoint left behind is complete and loadable.
  int checkpoints = 0;
  for (const auto& e : fs::directory_iterator(run / "checkpoints")) {
    EXPECT_EQ(e.path().extension(), ".pt") << "leftover " << e.path();
    EXPECT_FALSE(LoadWeights({"cnn_teacher", "", {}}, e.path()).empty());
    ++checkpoints;
  }
  EXPECT_GE(checkpoints, 1);

  std::vector<std::string> resume = args;
  resume.push_back("--resume");
  auto codes = RunRanks(2, resume);
  ASSERT_EQ(codes[0], 0) << Err(0);
  ASSERT_EQ(codes[1], 0) << Err(1);
  const nlohmann::json summary = Summary(run);
  EXPECT_EQ(summary["steps"], 2 * 3200 / 32);
}

// The example loss plugin, loaded with --loss_plugin on both ranks, is a
// term of a 2-rank distillation: it shows in metrics.jsonl and the summary.
TEST_F(DdpTest, PluginLossOnTwoRanks) {
  const std::string teacher_config = Write("teacher.pbtxt", R"pb(
    mode: TRAIN
    student { arch: "mlp" }
    data { train_limit: 64 test_limit: 64 }
    batch_size: 64 epochs: 1 threads: 1
  )pb")
                                         .string();
  const fs::path teacher = dir_ / "teacher";
  auto codes1 = RunRanks(1, {"--quiet", "--config", teacher_config, "--run_dir",
                             teacher.string()});
  ASSERT_EQ(codes1[0], 0) << Err(0);

  const std::string config =
      Write("job.pbtxt", R"pb(
    mode: DISTILL
    student { arch: "mlp" }
    teacher { model { arch: "mlp" weights: ")pb" +
                             (teacher / "model.pt").string() + R"pb(" } }
    data { train_limit: 256 test_limit: 64 }
    batch_size: 64 epochs: 1 threads: 1 log_every_steps: 1
    loss { name: "cosine_kd" weight: 0.5 params { key: "eps" value: 1e-6 } }
    loss { name: "hard_ce" weight: 0.5 }
  )pb")
          .string();
  const fs::path run = dir_ / "run";
  auto codes2 =
      RunRanks(2, {"--quiet", "--loss_plugin", DISTILL_COSINE_KD_PLUGIN,
                   "--config", config, "--run_dir", run.string()});
  ASSERT_EQ(codes2[0], 0) << Err(0);
  ASSERT_EQ(codes2[1], 0) << Err(1);

  const nlohmann::json summary = Summary(run);
  EXPECT_EQ(summary["ranks"], 2);
  // 1 - cosine similarity of two distributions lies in [0, 1) and is not 0
  // for an untrained student.
  const std::vector<nlohmann::json> train =
      ExpectLossTermWithin(run, "cosine_kd", 0.0, 1.0);
  EXPECT_EQ(train.size(), 256u / 64);
}

// A 2-rank run stopped mid-epoch resumes on 1 rank and ends with the same
// number of optimizer steps as an uninterrupted run.
TEST_F(DdpTest, ResumesOnAnotherNumberOfRanks) {
  const std::string config = Write("job.pbtxt", R"pb(
    mode: TRAIN
    student { arch: "mlp" }
    data { train_limit: 640 test_limit: 100 }
    batch_size: 64 epochs: 2 threads: 1
  )pb")
                                 .string();
  const fs::path run = dir_ / "run";
  auto first = RunRanks(2, {"--quiet", "--config", config, "--run_dir",
                            run.string(), "--stop_after_steps", "13"});
  ASSERT_EQ(first[0], 0) << Err(0);
  ASSERT_EQ(first[1], 0) << Err(1);
  ASSERT_TRUE(fs::exists(run / "checkpoints" / "ckpt-000000013.pt"));
  auto second =
      RunRanks(1, {"--config", config, "--run_dir", run.string(), "--resume"});
  ASSERT_EQ(second[0], 0) << Err(0);
  EXPECT_THAT(ReadFile(last_[0].out), HasSubstr("(epoch 2, step 13)"));
  const nlohmann::json summary = Summary(run);
  EXPECT_EQ(summary["steps"], 20);
}

TEST_F(DdpTest, BatchThatDoesNotSplitAcrossRanksIsRefused) {
  const std::string config = Write("job.pbtxt", R"pb(
    mode: TRAIN
    student { arch: "mlp" }
    data { train_limit: 64 test_limit: 10 }
    batch_size: 63
  )pb")
                                 .string();
  auto codes =
      RunRanks(2, {"--config", config, "--run_dir", (dir_ / "r").string()});
  EXPECT_EQ(codes[0], 1);
  EXPECT_EQ(codes[1], 1);
  EXPECT_EQ(
      Err(0),
      "distill: error: batch_size 63 does not split evenly across 2 ranks\n");
}

// The same binary under PyTorch's own launcher, whose agent serves the
// store. (1.13 spells the flag --no_python; its default redirect settings
// fail to parse on Python 3.11, so they are given explicitly.)
TEST_F(DdpTest, RunsUnderTorchrun) {
  if (std::system("test -x /usr/bin/torchrun") != 0) {
    GTEST_SKIP() << "no /usr/bin/torchrun";
  }
  const std::string config = Write("job.pbtxt", R"pb(
    mode: TRAIN
    student { arch: "mlp" }
    data { train_limit: 256 test_limit: 100 }
    batch_size: 32 epochs: 1 threads: 1
  )pb")
                                 .string();
  const fs::path run = dir_ / "run";
  const std::string cmd =
      "/usr/bin/torchrun --nproc_per_node 2 --master_port " +
      std::to_string(FreePort()) + " --redirects 1 --tee 1 --log_dir " +
      (dir_ / "torchrun_logs").string() + " --no_python " + BinDir() +
      "/distill --quiet --config " + config + " --run_dir " + run.string() +
      " >" + (dir_ / "torchrun.log").string() + " 2>&1";
  ASSERT_EQ(distill::testing::RunShell(cmd, dir_).exit_code, 0)
      << ReadFile(dir_ / "torchrun.log");
  const nlohmann::json summary = Summary(run);
  EXPECT_EQ(summary["ranks"], 2);
  EXPECT_EQ(summary["steps"], 8);
}

}  // namespace
