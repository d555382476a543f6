// Distillation through real `teacher_server` processes on loopback, driven
// through the `distill` binary: the same result as the in-process teacher,
// failover when a server is SIGKILLed or SIGSTOPped mid-epoch, a mismatched
// teacher refused at connect, a clear error (after a checkpoint) when every
// server is gone, the target cache, and TLS with a bearer token. Progress is
// read from the run's metrics.jsonl (one record per step), never from timing.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "common/testing/process.h"
#include "common/testing/run_files.h"
#include "common/testing/scratch_dir.h"
#include "common/testing/status_matchers.h"
#include "common/testing/teacher_process.h"
#include "common/testing/weights.h"

namespace {

namespace fs = std::filesystem;
using ::distill::testing::IsOk;
using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::StartsWith;

using ::distill::testing::BinDir;
using ::distill::testing::LastTrainStep;
using ::distill::testing::MakeSelfSignedCertificate;
using ::distill::testing::Outcome;
using ::distill::testing::Process;
using ::distill::testing::ReadFile;
using ::distill::testing::RunProcess;
using ::distill::testing::ScratchDir;
using ::distill::testing::Summary;
using ::distill::testing::WaitUntil;
using ::distill::testing::WeightDistance;
using Server = ::distill::testing::TeacherServerProcess;

std::vector<nlohmann::json> Records(const fs::path& run,
                                    const std::string& type) {
  return ::distill::testing::MetricsRecords(run, type);
}

class TeacherClientTest : public ::testing::Test {
 protected:
  // One small trained teacher for every test.
  static void SetUpTestSuite() {
    scratch_ = new ScratchDir("teacher_client_test");
    shared_ = scratch_->path();
    if (!fs::exists(BinDir() + "/teacher_server")) return;
    scratch_->Write("teacher.pbtxt", R"pb(
      mode: TRAIN
      student { arch: "mlp" }
      data { train_limit: 2048 test_limit: 100 }
      batch_size: 64 threads: 1 seed: 7
    )pb");
    const Outcome teacher =
        RunProcess({BinDir() + "/distill", "--quiet",
                    "--config=" + (shared_ / "teacher.pbtxt").string(),
                    "--run_dir=" + (shared_ / "teacher").string()},
                   shared_, "teacher");
    ASSERT_EQ(teacher.exit_code, 0) << teacher.err;
  }
  static void TearDownTestSuite() { delete scratch_; }

  void SetUp() override {
    if (!fs::exists(BinDir() + "/teacher_server")) {
      GTEST_SKIP() << "teacher_server is not built";
    }
    dir_ = shared_ /
           ::testing::UnitTest::GetInstance()->current_test_info()->name();
    fs::create_directories(dir_);
  }

  static std::vector<std::string> TeacherModel() {
    return {"--arch=mlp",
            "--weights=" + (shared_ / "teacher/model.pt").string()};
  }

  // A DISTILL config of the mlp student on `train_limit` samples; `teacher`
  // is the body of the teacher section.
  fs::path Config(const std::string& name, const std::string& teacher,
                  int64_t train_limit, int epochs = 1,
                  const std::string& batch = "batch_size: 32") {
    const fs::path path = dir_ / (name + ".pbtxt");
    std::ofstream(path) << "mode: DISTILL\nstudent { arch: \"mlp\" }\n"
                        << "data { train_limit: " << train_limit
                        << " test_limit: 1000 }\n"
                        << batch << " epochs: " << epochs
                        << " threads: 1 seed: 3 log_every_steps: 1\n"
                        << "teacher { " << teacher << " }\n";
    return path;
  }

  Process Start(const fs::path& config, const fs::path& run,
                const std::vector<std::string>& flags = {}) {
    std::vector<std::string> argv = {BinDir() + "/distill", "--quiet",
                                     "--config=" + config.string(),
                                     "--run_dir=" + run.string()};
    argv.insert(argv.end(), flags.begin(), flags.end());
    return Process::Start(argv, run.string() + ".out", run.string() + ".err");
  }

  // The trainer's exit code (-signal when killed) and output. A trainer
  // that already ended while the test polled it keeps its real exit code.
  Outcome Finish(Process& trainer, const fs::path& run) {
    Outcome o;
    o.exit_code = trainer.Wait();
    o.out = ReadFile(run.string() + ".out");
    o.err = ReadFile(run.string() + ".err");
    return o;
  }

  Outcome Run(const fs::path& config, const fs::path& run,
              const std::vector<std::string>& flags = {}) {
    Process trainer = Start(config, run, flags);
    return Finish(trainer, run);
  }

  // Largest absolute difference between two runs' final mlp weights.
  static double WeightDistance(const fs::path& a, const fs::path& b) {
    return ::distill::testing::WeightDistance("mlp", a / "model.pt",
                                              b / "model.pt");
  }

  static double Accuracy(const fs::path& run) {
    return Summary(run)["test_accuracy"].get<double>();
  }

  struct FailoverOutcome {
    std::string err;     // the trainer's stderr
    std::string failed;  // the address of the server that failed
    nlohmann::json epoch;
  };

  // Distills 4096 samples (128 steps) through servers a and b, with
  // `teacher_extra` in the teacher section, and does `fail` to b once 10
  // steps are trained. Expects the epoch to complete with every sample's
  // targets once, paired with the right sample: the student ends where a
  // run through a alone ends.
  FailoverOutcome RunWithFailingServer(
      const std::string& teacher_extra,
      const std::function<void(Server&)>& fail) {
    FailoverOutcome result;
    Server a(dir_, "a", TeacherModel());
    Outcome unbroken =
        Run(Config("one", "endpoints: \"" + a.address() + "\"", 4096),
            dir_ / "one");
    EXPECT_EQ(unbroken.exit_code, 0) << unbroken.err;

    Server b(dir_, "b", TeacherModel());
    result.failed = b.address();
    const fs::path run = dir_ / "two";
    Process trainer =
        Start(Config("two",
                     "endpoints: \"" + a.address() + "\" endpoints: \"" +
                         b.address() + "\"" + teacher_extra,
                     4096),
              run);
    EXPECT_TRUE(WaitUntil(
        [&] { return LastTrainStep(run) >= 10 || trainer.Exited(); }));
    EXPECT_TRUE(Records(run, "epoch").empty())
        << "the epoch ended before the failure";
    fail(b);
    Outcome o = Finish(trainer, run);
    b.Kill();
    result.err = o.err;
    EXPECT_EQ(o.exit_code, 0) << o.err;
    auto epoch = Records(run, "epoch");
    EXPECT_EQ(epoch.size(), 1u);
    if (epoch.empty()) return result;
    result.epoch = epoch[0];
    EXPECT_EQ(result.epoch["teacher_samples"], 4096);
    EXPECT_EQ(Records(run, "train").back()["step"], 128);
    EXPECT_LT(WeightDistance(dir_ / "one", run), 1e-4);
    EXPECT_NEAR(Accuracy(dir_ / "one"), Accuracy(run), 0.002);
    return result;
  }

  static ScratchDir* scratch_;
  static fs::path shared_;
  fs::path dir_;
};

ScratchDir* TeacherClientTest::scratch_ = nullptr;
fs::path TeacherClientTest::shared_;

// Dense fp32 through a server gives the in-process teacher's targets, so
// the student ends where the in-process run ends (up to float rounding of
// the server's batched forward).
TEST_F(TeacherClientTest, ServerMatchesInProcessTeacher) {
  Server server(dir_, "a", TeacherModel());
  const fs::path model_weights = shared_ / "teacher/model.pt";
  Outcome local = Run(Config("local",
                             "model { arch: \"mlp\" weights: \"" +
                                 model_weights.string() + "\" }",
                             1024),
                      dir_ / "local");
  ASSERT_EQ(local.exit_code, 0) << local.err;
  Outcome remote =
      Run(Config("remote", "endpoints: \"" + server.address() + "\"", 1024),
          dir_ / "remote");
  ASSERT_EQ(remote.exit_code, 0) << remote.err;

  EXPECT_LT(WeightDistance(dir_ / "local", dir_ / "remote"), 1e-4);
  EXPECT_NEAR(Accuracy(dir_ / "local"), Accuracy(dir_ / "remote"), 0.002);
  auto epoch = Records(dir_ / "remote", "epoch");
  ASSERT_EQ(epoch.size(), 1u);
  EXPECT_EQ(epoch[0]["teacher_batches"], 32);
  EXPECT_EQ(epoch[0]["teacher_samples"], 1024);
  EXPECT_GT(epoch[0]["teacher_latency_ms_mean"].get<double>(), 0);
  auto train = Records(dir_ / "remote", "train");
  ASSERT_EQ(train.size(), 32u);
  // Latency is logged for steps during which answers arrived; answers come
  // in bursts (prefetch), so not every step has one.
  EXPECT_TRUE(
      std::any_of(train.begin(), train.end(), [](const nlohmann::json& r) {
        return r.contains("teacher_latency_ms_p95");
      }));
  EXPECT_TRUE(train[5].contains("teacher_queue_depth"));
  EXPECT_TRUE(train[5].contains("teacher_waits"));
}

TEST_F(TeacherClientTest, EpochSurvivesASigkilledServer) {
  const FailoverOutcome o =
      RunWithFailingServer("", [](Server& b) { b.Kill(); });
  EXPECT_THAT(o.err,
              HasSubstr("distill: teacher server " + o.failed + " failed: "));
  EXPECT_GE(o.epoch["teacher_endpoint_failures"].get<int>(), 1);
}

// A stopped server keeps its connection open, so only the answer timeout
// notices it; its unanswered batches go to the other server.
TEST_F(TeacherClientTest, EpochSurvivesAStoppedServer) {
  const FailoverOutcome o = RunWithFailingServer(
      " answer_timeout_seconds: 2 connect_timeout_seconds: 1",
      [](Server& b) { b.Stop(); });
  EXPECT_THAT(o.err, HasSubstr("distill: teacher server " + o.failed +
                               " failed: no answer to batch "));
  EXPECT_THAT(o.err, HasSubstr(" within 2s\n"));
  EXPECT_GE(o.epoch["teacher_resent_batches"].get<int>(), 1);
}

TEST_F(TeacherClientTest, MismatchedTeacherIsRefusedAtConnect) {
  const fs::path script = dir_ / "seven_classes.pt";
  const std::string python =
      "import torch, sys\n"
      "m = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 7))\n"
      "torch.jit.script(m).save(sys.argv[1])\n";
  std::ofstream(dir_ / "make.py") << python;
  ASSERT_EQ(std::system(("/usr/bin/python3 " + (dir_ / "make.py").string() +
                         " " + script.string())
                            .c_str()),
            0);
  Server server(dir_, "seven", {"--torchscript=" + script.string()});
  const fs::path run = dir_ / "run";
  Outcome o =
      Run(Config("job", "endpoints: \"" + server.address() + "\"", 256), run);
  EXPECT_EQ(o.exit_code, 1);
  EXPECT_EQ(o.err, "distill: error: teacher server " + server.address() +
                       " ('seven_classes.pt') outputs 7 classes but the data "
                       "has 10\n");
  EXPECT_FALSE(fs::exists(run / "metrics.jsonl"));
}

TEST_F(TeacherClientTest, AllServersGoneStopsAfterACheckpoint) {
  auto server = std::make_unique<Server>(dir_, "a", TeacherModel());
  const fs::path run = dir_ / "run";
  const fs::path config = Config(
      "job",
      "endpoints: \"" + server->address() + "\" failover_grace_seconds: 1",
      4096);
  Process trainer = Start(config, run);
  ASSERT_TRUE(
      WaitUntil([&] { return LastTrainStep(run) >= 10 || trainer.Exited(); }));
  const std::string address = server->address();
  server->Kill();
  Outcome o = Finish(trainer, run);
  EXPECT_EQ(o.exit_code, 1);
  EXPECT_THAT(o.err, HasSubstr("distill: error: no teacher server has answered "
                               "for 1s: " +
                               address + " (last error: "));
  const std::string marker = "; checkpoint written to ";
  ASSERT_THAT(o.err, HasSubstr(marker));
  const std::string checkpoint =
      o.err.substr(o.err.find(marker) + marker.size());
  EXPECT_TRUE(fs::exists(checkpoint.substr(0, checkpoint.find('\n'))));

  // A new server lets the run continue from that checkpoint.
  Server again(dir_, "b", TeacherModel());
  Outcome resumed =
      Run(config, run, {"--resume", "--teacher_endpoints=" + again.address()});
  ASSERT_EQ(resumed.exit_code, 0) << resumed.err;
  EXPECT_EQ(Records(run, "train").back()["step"], 128);
}

TEST_F(TeacherClientTest, CacheServesLaterEpochsAndFollowsTheTeacherHash) {
  Server server(dir_, "a", TeacherModel());
  const std::string endpoint = "endpoints: \"" + server.address() + "\" ";
  Outcome memory =
      Run(Config("memory", endpoint + "cache { mode: MEMORY }", 512,
                 /*epochs=*/2),
          dir_ / "memory");
  ASSERT_EQ(memory.exit_code, 0) << memory.err;
  auto epochs = Records(dir_ / "memory", "epoch");
  ASSERT_EQ(epochs.size(), 2u);
  EXPECT_EQ(epochs[0]["teacher_batches"], 16);
  EXPECT_EQ(epochs[0]["teacher_cache_hits"], 0);
  EXPECT_EQ(epochs[1]["teacher_batches"], 0);
  EXPECT_EQ(epochs[1]["teacher_cache_hits"], 512);

  // On disk, a second run starts warm...
  const fs::path cache_dir = dir_ / "cache";
  const std::string disk =
      endpoint + "cache { mode: DISK dir: \"" + cache_dir.string() + "\" }";
  Outcome first = Run(Config("disk", disk, 512), dir_ / "first");
  ASSERT_EQ(first.exit_code, 0) << first.err;
  EXPECT_TRUE(fs::exists(cache_dir / "targets-rank0.bin"));
  Outcome warm = Run(Config("disk", disk, 512), dir_ / "warm");
  ASSERT_EQ(warm.exit_code, 0) << warm.err;
  EXPECT_EQ(Records(dir_ / "warm", "epoch")[0]["teacher_batches"], 0);
  EXPECT_EQ(Records(dir_ / "warm", "epoch")[0]["teacher_cache_hits"], 512);

  // ...but not with a teacher whose weights differ (the distilled student
  // of the first run, also an mlp).
  Server other(
      dir_, "other",
      {"--arch=mlp", "--weights=" + (dir_ / "first/model.pt").string()});
  const std::string other_disk = "endpoints: \"" + other.address() +
                                 "\" cache { mode: DISK dir: \"" +
                                 cache_dir.string() + "\" }";
  Outcome changed = Run(Config("other", other_disk, 512), dir_ / "changed");
  ASSERT_EQ(changed.exit_code, 0) << changed.err;
  EXPECT_THAT(changed.err,
              HasSubstr("distill: discarding teacher cache " +
                        (cache_dir / "targets-rank0.bin").string() +
                        ": it was made for teacher hash "));
  EXPECT_EQ(Records(dir_ / "changed", "epoch")[0]["teacher_batches"], 16);
  EXPECT_EQ(Records(dir_ / "changed", "epoch")[0]["teacher_cache_hits"], 0);
}

TEST_F(TeacherClientTest, TlsAndTokenThroughDistillFlags) {
  const fs::path key = dir_ / "cert.key", cert = dir_ / "cert.pem";
  const Outcome made =
      MakeSelfSignedCertificate(dir_, "cert", "localhost", "IP:127.0.0.1");
  ASSERT_EQ(made.exit_code, 0) << made.err;
  std::ofstream(dir_ / "token") << "s3cret\n";
  std::ofstream(dir_ / "wrong") << "guess\n";
  std::vector<std::string> tls_args = TeacherModel();
  tls_args.insert(tls_args.end(),
                  {"--tls_cert=" + cert.string(), "--tls_key=" + key.string(),
                   "--token_file=" + (dir_ / "token").string()});
  Server server(dir_, "tls", tls_args);
  const fs::path config =
      Config("job", "endpoints: \"" + server.address() + "\"", 256);
  Outcome ok = Run(config, dir_ / "ok",
                   {"--teacher_tls_ca=" + cert.string(),
                    "--teacher_token_file=" + (dir_ / "token").string()});
  ASSERT_EQ(ok.exit_code, 0) << ok.err;
  EXPECT_EQ(Records(dir_ / "ok", "epoch")[0]["teacher_samples"], 256);

  Outcome refused = Run(config, dir_ / "refused",
                        {"--teacher_tls_ca=" + cert.string(),
                         "--teacher_token_file=" + (dir_ / "wrong").string()});
  EXPECT_EQ(refused.exit_code, 1);
  EXPECT_EQ(refused.err, "distill: error: teacher server " + server.address() +
                             " refused Info: invalid bearer token\n");
}

// A TLS teacher whose certificate names another host: the connect error
// says why the connection failed, not only that Info timed out.
TEST_F(TeacherClientTest, ACertificateForAnotherHostIsRefusedSayingWhy) {
  const fs::path key = dir_ / "cert.key", cert = dir_ / "cert.pem";
  const Outcome made =
      MakeSelfSignedCertificate(dir_, "cert", "elsewhere", "DNS:elsewhere");
  ASSERT_EQ(made.exit_code, 0) << made.err;
  std::vector<std::string> tls_args = TeacherModel();
  tls_args.insert(tls_args.end(),
                  {"--tls_cert=" + cert.string(), "--tls_key=" + key.string()});
  Server server(dir_, "tls", tls_args);
  const fs::path config =
      Config("job",
             "endpoints: \"" + server.address() +
                 "\" connect_timeout_seconds: 2 failover_grace_seconds: 2",
             256);
  Outcome refused =
      Run(config, dir_ / "refused", {"--teacher_tls_ca=" + cert.string()});
  EXPECT_EQ(refused.exit_code, 1);
  EXPECT_THAT(refused.err,
              HasSubstr("distill: error: no teacher server answered Info "
                        "within 2s: " +
                        server.address() + " (UNAVAILABLE: "));
  EXPECT_THAT(refused.err, HasSubstr("Peer name 127.0.0.1 is not in peer "
                                     "certificate"));
  // One line says it; gRPC's log of every refused handshake stays out.
  EXPECT_THAT(refused.err, Not(HasSubstr("ssl_transport_security")));
}

}  // namespace
