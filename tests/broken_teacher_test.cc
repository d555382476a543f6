// `distill` against teacher servers that lie or hang, each a server written
// from teacher.proto alone (tests/broken_teacher.py), not the project's own:
// the run must end with exit 1 and one line naming the server's fault
// within a bounded time, never retry forever, crash or leave a partial
// checkpoint.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "common/testing/process.h"
#include "common/testing/scratch_dir.h"

namespace distill {
namespace {

namespace fs = std::filesystem;
using ::distill::testing::BinDir;
using ::distill::testing::Outcome;
using ::distill::testing::Process;
using ::distill::testing::ReadFile;
using ::distill::testing::ScratchDirTest;
using ::distill::testing::SourceDir;
using ::distill::testing::WaitForFile;
using ::distill::testing::WaitUntil;
using ::testing::HasSubstr;
using ::testing::Not;

class BrokenTeacherTest : public ScratchDirTest {
 protected:
  // Starts the lying server; its address, or "" (a test failure) when it
  // does not come up.
  std::string StartLiar(const std::string& lie) {
    const fs::path port_file = dir_ / "liar.port";
    liar_.emplace(Process::Start(
        {"/usr/bin/python3", SourceDir() + "/tests/broken_teacher.py",
         "--proto_dir", SourceDir() + "/proto", "--lie", lie, "--port_file",
         port_file.string()},
        dir_ / "liar.out", dir_ / "liar.err"));
    if (!WaitForFile(port_file)) {
      ADD_FAILURE() << "the lying server did not start: "
                    << ReadFile(dir_ / "liar.err");
      return "";
    }
    int port = 0;
    const std::string text = ReadFile(port_file);
    EXPECT_TRUE(absl::SimpleAtoi(absl::StripAsciiWhitespace(text), &port));
    return "127.0.0.1:" + std::to_string(port);
  }

  // Distills 256 samples through the server at `address` with `teacher`
  // added to the teacher section, to the end.
  Outcome Distill(const std::string& address, const std::string& teacher) {
    const fs::path config =
        Write("job.pbtxt",
              "mode: DISTILL\nstudent { arch: \"mlp\" }\n"
              "data { train_limit: 256 test_limit: 100 }\n"
              "batch_size: 32 epochs: 1 threads: 1 seed: 3\n"
              "checkpoint_every_steps: 1\n"
              "teacher { endpoints: \"" +
                  address + "\" " + teacher + " }\n");
    const auto start = std::chrono::steady_clock::now();
    Process distill = Process::Start(
        {BinDir() + "/distill", "--quiet", "--config=" + config.string(),
         "--run_dir=" + (dir_ / "run").string()},
        dir_ / "distill.out", dir_ / "distill.err");
    // A run that hangs is a failure of its own, not a test timeout.
    if (!WaitUntil([&] { return distill.Exited(); },
                   std::chrono::seconds(90))) {
      ADD_FAILURE() << "distill did not end within 90 s; stderr:\n"
                    << ReadFile(dir_ / "distill.err");
      distill.Signal(SIGKILL);
    }
    Outcome o;
    o.exit_code = distill.Wait();
    o.out = ReadFile(dir_ / "distill.out");
    o.err = ReadFile(dir_ / "distill.err");
    seconds_ =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
            .count();
    return o;
  }

  // Batches the server received (one line each).
  int BatchesReceived() const {
    int n = 0;
    for (absl::string_view line :
         absl::StrSplit(ReadFile(dir_ / "liar.out"), '\n')) {
      n += absl::StartsWith(line, "batch ");
    }
    return n;
  }

  // No temporary checkpoint file is left behind.
  void ExpectNoPartialCheckpoint() const {
    const fs::path folder = dir_ / "run" / "checkpoints";
    if (!fs::exists(folder)) return;
    for (const auto& entry : fs::directory_iterator(folder)) {
      EXPECT_THAT(entry.path().filename().string(), Not(HasSubstr(".tmp")));
    }
  }

  std::optional<Process> liar_;
  double seconds_ = 0;
};

// A server that fails every batch with INTERNAL (retryable): before, the
// client resent >10,000 times a minute and never exited. Each batch is now
// sent max_attempts times; the run ends naming the cause.
TEST_F(BrokenTeacherTest, ServerFailingEveryBatchEndsTheRunAfterMaxAttempts) {
  const std::string address = StartLiar("internal");
  ASSERT_FALSE(address.empty());
  const Outcome o = Distill(address, "max_attempts: 3 prefetch_batches: 0");
  EXPECT_EQ(o.exit_code, 1) << o.err;
  EXPECT_THAT(o.err, HasSubstr("was sent 3 times (teacher.max_attempts) "
                               "without an answer; the last, to " +
                               address +
                               ", ended with: INTERNAL: liar: "
                               "internal"));
  EXPECT_EQ(BatchesReceived(), 3);
  ExpectNoPartialCheckpoint();
}

TEST_F(BrokenTeacherTest, ServerAnsweringUnknownBatchIdsEndsTheRun) {
  const std::string address = StartLiar("unknown_id");
  ASSERT_FALSE(address.empty());
  const Outcome o = Distill(address, "max_attempts: 2 prefetch_batches: 0");
  EXPECT_EQ(o.exit_code, 1) << o.err;
  EXPECT_THAT(o.err, HasSubstr("was sent 2 times (teacher.max_attempts)"));
  EXPECT_THAT(o.err, HasSubstr("answered batch id 1001, which is not in "
                               "flight on its stream"));
  EXPECT_EQ(BatchesReceived(), 2);
}

// Info answers, batches never do: each silence costs answer_timeout_seconds
// and counts as an attempt, so the run ends after 2 of them.
TEST_F(BrokenTeacherTest, ServerThatNeverAnswersEndsTheRun) {
  const std::string address = StartLiar("silent");
  ASSERT_FALSE(address.empty());
  const Outcome o = Distill(
      address, "max_attempts: 2 answer_timeout_seconds: 1 prefetch_batches: 0");
  EXPECT_EQ(o.exit_code, 1) << o.err;
  EXPECT_THAT(o.err, HasSubstr("was sent 2 times (teacher.max_attempts) "
                               "without an answer; the last, to " +
                               address +
                               ", ended with: no answer to batch 1 "
                               "within 1s"));
  EXPECT_GE(seconds_, 2.0);  // two timeouts of 1 s passed before the end
}

// Info answers, batches never do, and the server is back (Info) after each
// timeout: before, every reconnect restarted failover_grace_seconds, so only
// max_attempts (here 100 x 2 s) could end the run. The grace period now
// runs until a batch is answered.
TEST_F(BrokenTeacherTest, GracePeriodCountsAnswersNotReconnects) {
  const std::string address = StartLiar("silent");
  ASSERT_FALSE(address.empty());
  const Outcome o = Distill(address,
                            "max_attempts: 100 answer_timeout_seconds: 1 "
                            "failover_grace_seconds: 3 prefetch_batches: 0");
  EXPECT_EQ(o.exit_code, 1) << o.err;
  EXPECT_THAT(
      o.err,
      HasSubstr("no teacher server has answered for 3s: " + address + " ("));
  EXPECT_THAT(o.err, Not(HasSubstr("teacher.max_attempts")));
  // It reconnected and was sent the batch again before the end.
  EXPECT_GE(BatchesReceived(), 2);
  ExpectNoPartialCheckpoint();
}

// A server that stops reading its streams: the client's writes of 100 KB
// batches block on HTTP/2 flow control. Before, the supervisor resent the
// first timed-out batch itself and blocked in that write for good, so no
// timeout fired again and the run hung. Writes now block only the
// stream's own writer thread: each silence costs answer_timeout_seconds and
// counts as an attempt.
TEST_F(BrokenTeacherTest, ServerThatStopsReadingEndsTheRun) {
  const std::string address = StartLiar("stall");
  ASSERT_FALSE(address.empty());
  const Outcome o = Distill(
      address, "max_attempts: 3 answer_timeout_seconds: 1 prefetch_batches: 0");
  EXPECT_EQ(o.exit_code, 1) << o.err;
  EXPECT_THAT(o.err, HasSubstr("was sent 3 times (teacher.max_attempts) "
                               "without an answer; the last, to " +
                               address +
                               ", ended with: no answer to batch 1 "
                               "within 1s"));
  ExpectNoPartialCheckpoint();
}

// Rows of zeros would train with kd_kl = 0: refused as not distributions.
TEST_F(BrokenTeacherTest, RowsThatAreNotDistributionsAreRefused) {
  const std::string address = StartLiar("zeros");
  ASSERT_FALSE(address.empty());
  const Outcome o = Distill(address, "");
  EXPECT_EQ(o.exit_code, 1) << o.err;
  EXPECT_THAT(o.err, HasSubstr("teacher server " + address +
                               " answered batch 1 with bad targets: probs "
                               "rows must each sum to 1 (within 0.001); row 0 "
                               "sums to 0"));
  ExpectNoPartialCheckpoint();
}

// [N, 1, C] for [N] samples with the memory cache: before, SIGABRT from an
// uncaught c10::Error in the cache's insert.
TEST_F(BrokenTeacherTest, TargetsOfTheWrongRankAreRefusedWithTheCache) {
  const std::string address = StartLiar("wrong_rank");
  ASSERT_FALSE(address.empty());
  const Outcome o = Distill(address, "cache { mode: MEMORY }");
  EXPECT_EQ(o.exit_code, 1) << o.err;
  EXPECT_THAT(o.err, HasSubstr("answered batch 1 with bad targets: targets "
                               "for [32, 1] instead of [32]"));
  ExpectNoPartialCheckpoint();
}

// 32 chunks of 4.8 KB for a batch whose 32 rows take 1,280 bytes: each
// chunk is under the receive limit (5,376 bytes), their number is the
// server's word. The client stops reading at the first chunk past what the
// rows can take.
TEST_F(BrokenTeacherTest, ChunksBeyondWhatTheRowsTakeAreRefused) {
  const std::string address = StartLiar("flood");
  ASSERT_FALSE(address.empty());
  const Outcome o = Distill(address, "max_attempts: 2 prefetch_batches: 0");
  EXPECT_EQ(o.exit_code, 1) << o.err;
  EXPECT_THAT(o.err, HasSubstr("bytes of chunks for batch 1, more than its 32 "
                               "rows can take (132352)"));
}

// One 64 MB answer for a batch whose 32 rows take 1,280 bytes, with
// max_answer_bytes lifted to 1 GB: before, the client took the whole
// message into memory and only then refused its shape. gRPC's receive
// limit is now what the largest batch's answer can take (plus framing);
// RESOURCE_EXHAUSTED is not retried, so the run stops at the first.
TEST_F(BrokenTeacherTest, AnAnswerBeyondWhatTheBatchTakesIsNotReceived) {
  const std::string address = StartLiar("huge");
  ASSERT_FALSE(address.empty());
  const Outcome o = Distill(address,
                            "max_answer_bytes: 1000000000 max_attempts: 2 "
                            "prefetch_batches: 0");
  EXPECT_EQ(o.exit_code, 1) << o.err;
  EXPECT_THAT(o.err, HasSubstr("teacher server " + address +
                               " ended the stream: Received message larger "
                               "than max (67108903 vs. 5376)"));
}

}  // namespace
}  // namespace distill
