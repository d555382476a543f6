// The named steps around the loop, on a real assembled job and without a
// binary: closing an epoch (its record, evaluation and checkpoint when
// due), agreeing to stop, checkpoints and resuming from them.
#include "trainer/internal/training_run.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <string>
#include <vector>

#include "common/testing/process.h"
#include "common/testing/run_files.h"
#include "common/testing/scratch_dir.h"
#include "common/testing/status_matchers.h"

namespace distill::trainer {
namespace {

namespace fs = std::filesystem;
using ::distill::testing::IsOk;
using ::distill::testing::MetricsRecords;
using ::distill::testing::ScratchDirTest;
using ::distill::testing::StatusIs;
using ::testing::AllOf;
using ::testing::HasSubstr;

class TrainingRunTest : public ScratchDirTest {
 protected:
  // An mlp TRAIN job of 3 epochs over 64 samples, evaluated every 2 epochs
  // on 50 test samples, with `extra` config text.
  void Assemble(const std::string& extra = "") {
    auto config = ParseJobConfig(R"pb(
      mode: TRAIN
      student { arch: "mlp" }
      data { train_limit: 64 test_limit: 50 }
      batch_size: 16 epochs: 3 threads: 1
      eval_every_epochs: 2
    )pb" + extra,
                                 "test", dir_.string());
    ASSERT_THAT(config, IsOk());
    ASSERT_THAT(AssembleJob(*config, WorldInfo{}, nullptr, job_), IsOk());
  }

  // A report of epoch `epoch` (0-based) that took 4 steps an epoch.
  static EpochReport Report(int64_t epoch) {
    EpochReport r;
    r.epoch = epoch;
    r.position = {epoch + 1, 0, 4 * (epoch + 1)};
    r.seconds = 2;
    r.samples = 64;
    r.loss_sum = 64 * 1.5;
    r.term_sums = {{"hard_ce", 64 * 1.5}};
    return r;
  }

  bool HasCheckpoints() const {
    return fs::exists(dir_ / "checkpoints") &&
           !fs::is_empty(dir_ / "checkpoints");
  }

  Job job_;
  RunOptions options_;
};

// Epoch 1 of 3 (eval every 2, checkpoints every epoch by default off here):
// a record, no evaluation; epoch 2: the evaluation joins the record; the
// last epoch also writes a checkpoint at its position.
TEST_F(TrainingRunTest, CloseEpochEvaluatesAndCheckpointsWhenDue) {
  Assemble("checkpoint_every_epochs: 0\n");
  options_.verbose = false;
  TrainingRun run(job_, options_);
  ASSERT_THAT(run.Open(), IsOk());

  ASSERT_THAT(run.CloseEpoch(Report(0)), IsOk());
  std::vector<nlohmann::json> epochs = MetricsRecords(dir_, "epoch");
  ASSERT_EQ(epochs.size(), 1u);
  EXPECT_EQ(epochs[0]["epoch"], 1);
  EXPECT_EQ(epochs[0]["step"], 4);
  EXPECT_DOUBLE_EQ(epochs[0]["train_loss"].get<double>(), 1.5);
  EXPECT_DOUBLE_EQ(epochs[0]["terms"]["hard_ce"].get<double>(), 1.5);
  EXPECT_DOUBLE_EQ(epochs[0]["samples_per_sec"].get<double>(), 32);
  EXPECT_FALSE(epochs[0].contains("test_accuracy"));
  EXPECT_TRUE(run.last_eval().is_null());
  EXPECT_FALSE(HasCheckpoints());

  ASSERT_THAT(run.CloseEpoch(Report(1)), IsOk());
  epochs = MetricsRecords(dir_, "epoch");
  ASSERT_EQ(epochs.size(), 2u);
  ASSERT_TRUE(epochs[1].contains("test_accuracy"));
  EXPECT_EQ(epochs[1]["per_class_accuracy"].size(), 10u);
  EXPECT_EQ(run.last_eval()["test_accuracy"], epochs[1]["test_accuracy"]);
  EXPECT_FALSE(HasCheckpoints());

  ASSERT_THAT(run.CloseEpoch(Report(2)), IsOk());
  EXPECT_TRUE(MetricsRecords(dir_, "epoch")[2].contains("test_accuracy"));
  EXPECT_THAT(run.last_checkpoint(), HasSubstr("ckpt-000000012.pt"));
  EXPECT_TRUE(fs::exists(run.last_checkpoint()));
}

TEST_F(TrainingRunTest, AgreesToStopAtTheStepLimitOrOnASignal) {
  Assemble();
  options_.stop_after_steps = 5;
  bool signalled = false;
  options_.should_stop = [&] { return signalled; };
  TrainingRun run(job_, options_);
  auto stop = [&](int64_t step) {
    absl::StatusOr<bool> agreed = run.AgreeToStop(step);
    EXPECT_THAT(agreed, IsOk());
    return agreed.value_or(false);
  };
  EXPECT_FALSE(stop(4));
  EXPECT_TRUE(stop(5));
  signalled = true;
  EXPECT_TRUE(stop(1));
}

// A checkpoint holds the position; --resume starts from it with the
// weights it saved; without one, a resumed run starts at the beginning.
TEST_F(TrainingRunTest, ResumeStartsFromTheNewestCheckpoint) {
  Assemble();
  options_.verbose = false;
  options_.resume = true;
  {
    TrainingRun fresh(job_, options_);
    auto start = fresh.Resume();
    ASSERT_THAT(start, IsOk());
    EXPECT_EQ(start->global_step, 0);
    ASSERT_THAT(fresh.Checkpoint({1, 32, 6}), IsOk());
  }
  const torch::Tensor saved = job_.model->parameters()[0].detach().clone();
  {
    torch::NoGradGuard no_grad;
    job_.model->parameters()[0].add_(1);
  }
  TrainingRun resumed(job_, options_);
  auto at = resumed.Resume();
  ASSERT_THAT(at, IsOk());
  EXPECT_EQ(at->epoch, 1);
  EXPECT_EQ(at->cursor, 32);
  EXPECT_EQ(at->global_step, 6);
  EXPECT_TRUE(torch::equal(job_.model->parameters()[0], saved));
}

// The newest checkpoint cut short (a crash or a full disk during a copy,
// say): --resume says which one it skipped and why and continues from the
// previous one, whose weights it restores. With every checkpoint damaged
// the run stops with DataLoss naming them.
TEST_F(TrainingRunTest, ResumeSkipsADamagedNewestCheckpoint) {
  Assemble("keep_checkpoints: 2");
  options_.verbose = false;
  options_.resume = true;
  TrainingRun first(job_, options_);
  ASSERT_THAT(first.Resume(), IsOk());
  ASSERT_THAT(first.Checkpoint({1, 32, 6}), IsOk());
  const torch::Tensor at_six = job_.model->parameters()[0].detach().clone();
  {
    torch::NoGradGuard no_grad;
    job_.model->parameters()[0].add_(1);
  }
  auto newest = first.Checkpoint({2, 0, 8});
  ASSERT_THAT(newest, IsOk());
  fs::resize_file(*newest, fs::file_size(*newest) / 2);
  {
    torch::NoGradGuard no_grad;
    job_.model->parameters()[0].add_(1);
  }

  ::testing::internal::CaptureStderr();
  TrainingRun resumed(job_, options_);
  auto at = resumed.Resume();
  const std::string err = ::testing::internal::GetCapturedStderr();
  ASSERT_THAT(at, IsOk());
  EXPECT_EQ(at->global_step, 6);
  EXPECT_EQ(at->epoch, 1);
  EXPECT_EQ(at->cursor, 32);
  EXPECT_TRUE(torch::equal(job_.model->parameters()[0], at_six));
  EXPECT_THAT(err, HasSubstr("distill: skipped checkpoint " + *newest +
                             " is unreadable ("));

  const std::string older = (dir_ / "checkpoints/ckpt-000000006.pt").string();
  fs::resize_file(older, 100);
  TrainingRun broken(job_, options_);
  EXPECT_THAT(
      broken.Resume().status(),
      StatusIs(absl::StatusCode::kDataLoss,
               AllOf(HasSubstr("no checkpoint in " + dir_.string() +
                               " reads back: checkpoint " + *newest),
                     HasSubstr("; checkpoint " + older + " is unreadable"))));
}

// A checkpoint with one byte changed, found by the checkpoint fuzzer: read
// by LibTorch it crashed the process (SIGSEGV). Resuming from it is a clear
// DataLoss, and the older checkpoint is used.
TEST_F(TrainingRunTest, ResumeSkipsACheckpointThatCrashedLibTorch) {
  Assemble("keep_checkpoints: 2");
  options_.verbose = false;
  options_.resume = true;
  TrainingRun first(job_, options_);
  ASSERT_THAT(first.Resume(), IsOk());
  ASSERT_THAT(first.Checkpoint({1, 32, 6}), IsOk());
  const std::string damaged = (dir_ / "checkpoints/ckpt-000000008.pt").string();
  fs::copy_file(
      testing::SourceDir() +
          "/tests/fuzz/regressions/checkpoint_loader/torch_type_parser_segv",
      damaged);

  ::testing::internal::CaptureStderr();
  TrainingRun resumed(job_, options_);
  auto at = resumed.Resume();
  const std::string err = ::testing::internal::GetCapturedStderr();
  ASSERT_THAT(at, IsOk());
  EXPECT_EQ(at->global_step, 6);
  EXPECT_THAT(err, AllOf(HasSubstr("distill: skipped checkpoint " + damaged +
                                   " is unreadable ("),
                         HasSubstr("CRC")));
}

// The summary of a run resumed after its last epoch evaluates what it
// saved, so it always reports a test accuracy.
TEST_F(TrainingRunTest, SummaryEvaluatesWhenNoEpochWasClosed) {
  Assemble();
  TrainingRun run(job_, options_);
  auto summary = run.WriteSummary({3, 0, 12});
  ASSERT_THAT(summary, IsOk());
  EXPECT_TRUE(summary->contains("test_accuracy"));
  EXPECT_EQ((*summary)["steps"], 12);
  EXPECT_EQ((*summary)["ranks"], 1);
  EXPECT_TRUE(fs::exists(dir_ / "model.pt"));
  EXPECT_EQ(::distill::testing::Summary(dir_), *summary);
}

}  // namespace
}  // namespace distill::trainer
