// distill_launch as users run it: real `distill` ranks (and real teacher
// servers, once that binary is built) on loopback. A short distillation on
// two ranks, a rank or teacher killed mid-run and the group restarted from
// its checkpoint, restarts running out, a signal passed to the ranks, bad
// command lines, and, after every run, no process left behind (checked by
// the pids the launcher recorded).
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "common/testing/process.h"
#include "common/testing/scratch_dir.h"

namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using ::testing::Not;

using ::distill::testing::BinDir;
using ::distill::testing::MakeSelfSignedCertificate;
using ::distill::testing::Outcome;
using ::distill::testing::Process;
using ::distill::testing::ReadFile;
using ::distill::testing::ScratchDirTest;
using ::distill::testing::WaitForCheckpoint;

int Count(const std::string& text, const std::string& what) {
  int n = 0;
  for (size_t at = text.find(what); at != std::string::npos;
       at = text.find(what, at + 1)) {
    ++n;
  }
  return n;
}

bool Alive(pid_t pid) { return ::kill(pid, 0) == 0 || errno != ESRCH; }

// Alive and not a zombie waiting for whoever inherited it to reap it.
bool Running(pid_t pid) {
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string text((std::istreambuf_iterator<char>(stat)),
                   std::istreambuf_iterator<char>());
  const size_t paren = text.rfind(')');
  return paren != std::string::npos && paren + 2 < text.size() &&
         text[paren + 2] != 'Z';
}

struct Launch {
  Process process;
  fs::path out, err;
};

class LaunchTest : public ScratchDirTest {
 protected:
  Launch Start(const std::vector<std::string>& args) {
    Launch l;
    const std::string tag = std::to_string(launches_++);
    l.out = dir_ / ("launch" + tag + ".out");
    l.err = dir_ / ("launch" + tag + ".err");
    std::vector<std::string> argv = {BinDir() + "/distill_launch"};
    argv.insert(argv.end(), args.begin(), args.end());
    l.process = Process::Start(argv, l.out, l.err);
    return l;
  }

  // Exit code; -signal when killed.
  static int Wait(Launch& l) { return l.process.Wait(); }

  int Run(const std::vector<std::string>& args) {
    last_ = Start(args);
    return Wait(last_);
  }

  // Every process the launcher recorded in `work`'s attempt files.
  static std::vector<pid_t> RecordedPids(const fs::path& work) {
    std::vector<pid_t> pids;
    for (int k = 0;
         fs::exists(work / ("attempt-" + std::to_string(k) + ".json")); ++k) {
      auto record = nlohmann::json::parse(
          ReadFile(work / ("attempt-" + std::to_string(k) + ".json")));
      for (const auto& r : record["ranks"])
        pids.push_back(r["pid"].get<pid_t>());
      for (const auto& t : record["teachers"])
        pids.push_back(t["pid"].get<pid_t>());
    }
    return pids;
  }

  std::string StopOneRankWith(int signo, int exit_code);

  void ExpectNoneLeft(const fs::path& work, size_t expected_processes) {
    const std::vector<pid_t> pids = RecordedPids(work);
    EXPECT_EQ(pids.size(), expected_processes);
    for (pid_t pid : pids)
      EXPECT_FALSE(Alive(pid)) << "pid " << pid << " still exists";
  }

  // A small MLP teacher trained for one step, as the teacher of the jobs.
  fs::path TeacherWeights() {
    const std::string config = Write("teacher.pbtxt", R"pb(
      mode: TRAIN
      student { arch: "mlp" }
      data { train_limit: 64 test_limit: 64 }
      batch_size: 64 epochs: 1 threads: 1
    )pb")
                                   .string();
    const fs::path run = dir_ / "teacher";
    EXPECT_EQ(Run({"--nproc", "1", "--", "--quiet", "--config", config,
                   "--run_dir", run.string()}),
              0)
        << ReadFile(last_.err);
    return run / "model.pt";
  }

  // A distillation of an MLP student from the MLP teacher: `train` samples,
  // global batch 32, 2 epochs, a checkpoint every 5 steps.
  std::string DistillConfig(const fs::path& teacher, int train) {
    return Write("job.pbtxt", R"pb(
      mode: DISTILL
      student { arch: "mlp" }
      teacher { model { arch: "mlp" weights: ")pb" +
                                  teacher.string() + R"pb(" } }
      data { train_limit: )pb" + std::to_string(train) +
                                  R"pb( test_limit: 64 }
      loss { name: "kd_kl" weight: 0.9 }
      loss { name: "hard_ce" weight: 0.1 }
      temperature: 4
      batch_size: 32 epochs: 2 threads: 1
      checkpoint_every_steps: 5
      distributed { collective_timeout_seconds: 60 }
    )pb")
        .string();
  }

  bool HaveTeacherServer() const {
    return fs::exists(BinDir() + "/teacher_server");
  }

  Launch last_;
  int launches_ = 0;
};

TEST_F(LaunchTest, TwoRanksCompleteADistillation) {
  const fs::path teacher = TeacherWeights();
  const std::string config = DistillConfig(teacher, 256);
  const fs::path run = dir_ / "run", work = dir_ / "work";
  fs::create_directories(work);
  ASSERT_EQ(Run({"--nproc", "2", "--work_dir", work.string(), "--", "--config",
                 config, "--run_dir", run.string()}),
            0)
      << ReadFile(last_.err);
  auto summary = nlohmann::json::parse(ReadFile(run / "summary.json"));
  EXPECT_EQ(summary["ranks"], 2);
  EXPECT_EQ(summary["steps"], 2 * 256 / 32);
  // Rank 0's lines carry its prefix, and nothing comes out unprefixed.
  const std::string out = ReadFile(last_.out);
  EXPECT_THAT(out, HasSubstr("[rank 0] test accuracy "));
  std::istringstream lines(out);
  for (std::string line; std::getline(lines, line);) {
    EXPECT_EQ(line.rfind("[rank ", 0), 0u) << line;
  }
  EXPECT_THAT(ReadFile(last_.err),
              HasSubstr("distill_launch: all 2 ranks finished\n"));
  ExpectNoneLeft(work, 2);
}

// Rank 1 is SIGKILLed once the first checkpoint exists: the launcher stops
// rank 0, starts both again with --resume, and the job ends with the
// number of steps an unbroken run takes.
TEST_F(LaunchTest, KilledRankRestartsTheGroupFromTheCheckpoint) {
  const fs::path teacher = TeacherWeights();
  const std::string config = DistillConfig(teacher, 3200);
  const fs::path run = dir_ / "run", work = dir_ / "work";
  fs::create_directories(work);
  Launch l =
      Start({"--nproc", "2", "--max_restarts", "2", "--work_dir", work.string(),
             "--", "--config", config, "--run_dir", run.string()});
  ASSERT_TRUE(WaitForCheckpoint(run));
  auto record = nlohmann::json::parse(ReadFile(work / "attempt-0.json"));
  const pid_t rank1 = record["ranks"][1]["pid"].get<pid_t>();
  ASSERT_EQ(::kill(rank1, SIGKILL), 0);
  ASSERT_EQ(Wait(l), 0) << ReadFile(l.err);
  EXPECT_FALSE(fs::exists(work / "attempt-2.json"));
  auto summary = nlohmann::json::parse(ReadFile(run / "summary.json"));
  EXPECT_EQ(summary["steps"], 2 * 3200 / 32);
  const std::string err = ReadFile(l.err);
  EXPECT_THAT(
      err, HasSubstr("distill_launch: rank 1 was killed by signal 9 (SIGKILL); "
                     "stopping the others\n"));
  EXPECT_THAT(err,
              HasSubstr("distill_launch: restarting the group from the newest "
                        "checkpoint (restart 1 of 2)\n"));
  // The second attempt resumed from a checkpoint, not from the start.
  EXPECT_THAT(ReadFile(l.out), HasSubstr("[rank 0] resuming from "));
  EXPECT_THAT(ReadFile(l.out), Not(HasSubstr("(epoch 1, step 0)")));
  ExpectNoneLeft(work, 4);
}

// Every attempt fails the same way: after 1 + max_restarts attempts the
// launcher stops with one line saying what failed and how often.
TEST_F(LaunchTest, SpentRestartsEndWithOneClearError) {
  // Refused by distill's config check, before any data is read.
  const std::string config =
      Write("bad.pbtxt",
            "mode: TRAIN\nstudent { arch: \"mlp\" }\nbatch_size: 0\n")
          .string();
  const fs::path work = dir_ / "work";
  fs::create_directories(work);
  EXPECT_EQ(
      Run({"--nproc", "1", "--max_restarts", "2", "--work_dir", work.string(),
           "--", "--config", config, "--run_dir", (dir_ / "run").string()}),
      1);
  const std::string err = ReadFile(last_.err);
  EXPECT_EQ(Count(err, "[rank 0] distill: error: "), 3) << err;
  EXPECT_THAT(err, HasSubstr("batch_size must be >= 1"));
  EXPECT_EQ(Count(err, "(restart "), 2) << err;
  const std::string last_line = err.substr(err.rfind('\n', err.size() - 2) + 1);
  EXPECT_EQ(
      last_line,
      "distill_launch: error: the job failed 3 times and --max_restarts=2 "
      "is spent: rank 0 exited with status 1 (3 times)\n");
  ExpectNoneLeft(work, 3);
}

// What each rank is given and how its output comes back, seen through a
// shell standing in for distill: the torchrun variables, one prefix per
// line on the stream it was written to (an unfinished last line too), and
// on a restart the next TORCHELASTIC_RESTART_COUNT and --resume.
TEST_F(LaunchTest, RanksGetTheirVariablesAndTheirOutputIsPrefixed) {
  const fs::path work = dir_ / "work";
  fs::create_directories(work);
  // Rank 0 finishes; rank 1 fails once rank 0 is done (so the launcher
  // has nothing left to stop and every line gets out).
  const std::string marker = (dir_ / "rank0_done_").string();
  const std::string script =
      "echo \"$RANK/$WORLD_SIZE local $LOCAL_RANK/$LOCAL_WORLD_SIZE "
      "$MASTER_ADDR attempt $TORCHELASTIC_RESTART_COUNT args:$*\"; "
      "echo \"port $MASTER_PORT\" >&2; printf unfinished; "
      "m=" +
      marker +
      "$TORCHELASTIC_RESTART_COUNT; "
      "if [ $RANK = 0 ]; then touch $m; exit 0; fi; "
      "for i in $(seq 6000); do [ -e $m ] && exit 3; sleep 0.01; done; exit 4";
  EXPECT_EQ(Run({"--nproc", "2", "--max_restarts", "1", "--master_port",
                 "29999", "--work_dir", work.string(), "--distill", "/bin/bash",
                 "--", "-c", script, "rank"}),
            1);
  std::vector<std::string> out, err;
  std::istringstream out_lines(ReadFile(last_.out)),
      err_lines(ReadFile(last_.err));
  for (std::string l; std::getline(out_lines, l);) out.push_back(l);
  for (std::string l; std::getline(err_lines, l);) {
    if (l.rfind("[rank", 0) == 0) err.push_back(l);
  }
  std::sort(out.begin(), out.end());
  std::sort(err.begin(), err.end());
  EXPECT_THAT(out,
              ::testing::ElementsAre(
                  "[rank 0] 0/2 local 0/2 127.0.0.1 attempt 0 args:",
                  "[rank 0] 0/2 local 0/2 127.0.0.1 attempt 1 args:--resume",
                  "[rank 0] unfinished", "[rank 0] unfinished",
                  "[rank 1] 1/2 local 1/2 127.0.0.1 attempt 0 args:",
                  "[rank 1] 1/2 local 1/2 127.0.0.1 attempt 1 args:--resume",
                  "[rank 1] unfinished", "[rank 1] unfinished"));
  EXPECT_THAT(err, ::testing::ElementsAre(
                       "[rank 0] port 29999", "[rank 0] port 29999",
                       "[rank 1] port 29999", "[rank 1] port 29999"));
  EXPECT_THAT(
      ReadFile(last_.err),
      HasSubstr("distill_launch: error: the job failed 2 times and "
                "--max_restarts=1 is spent: rank 1 exited with status 3 "
                "(2 times)\n"));
  ExpectNoneLeft(work, 4);
}

// A launcher killed with SIGKILL takes its ranks down (PR_SET_PDEATHSIG)
// and whatever they started too: a rank here is a shell that started a
// `sleep`, which would outlive the shell on its own.
TEST_F(LaunchTest, SigkilledLauncherLeavesNoGrandchildren) {
  const fs::path pid_file = dir_ / "grandchild.pid";
  const std::string script = "sleep 300 & echo $! > " + pid_file.string() +
                             ".tmp; mv " + pid_file.string() + ".tmp " +
                             pid_file.string() + "; wait";
  // Its temporary work directory goes too: TMPDIR puts it in sight.
  const fs::path tmp = dir_ / "tmp";
  fs::create_directories(tmp);
  Launch l;
  l.out = dir_ / "killed.out";
  l.err = dir_ / "killed.err";
  l.process =
      Process::Start({BinDir() + "/distill_launch", "--nproc", "1", "--distill",
                      "/bin/bash", "--", "-c", script, "rank"},
                     l.out, l.err, {{"TMPDIR", tmp.string()}});
  ASSERT_TRUE(distill::testing::WaitForFile(pid_file, std::chrono::seconds(30)))
      << ReadFile(l.err);
  const pid_t grandchild = std::stoi(ReadFile(pid_file));
  ASSERT_TRUE(Running(grandchild));
  ASSERT_FALSE(fs::is_empty(tmp)) << "no work directory in TMPDIR";
  ASSERT_EQ(::kill(l.process.pid(), SIGKILL), 0);
  EXPECT_EQ(Wait(l), -SIGKILL);
  EXPECT_TRUE(distill::testing::WaitUntil([&] { return !Running(grandchild); },
                                          std::chrono::seconds(10)))
      << "the rank's child " << grandchild << " outlived the launcher";
  EXPECT_TRUE(distill::testing::WaitUntil([&] { return fs::is_empty(tmp); },
                                          std::chrono::seconds(10)))
      << "the launcher's work directory is still there";
  ::kill(grandchild, SIGKILL);
}

// SIGTERM to the launcher reaches the ranks, which agree on a step,
// checkpoint and exit 143; the launcher exits with their status, and a
// second launch with --resume finishes the job with the full step count.
TEST_F(LaunchTest, SigtermStopsTheRanksAtACheckpointAndTheJobResumes) {
  const fs::path teacher = TeacherWeights();
  const std::string config = DistillConfig(teacher, 3200);
  const fs::path run = dir_ / "run", work = dir_ / "work";
  fs::create_directories(work);
  Launch l = Start({"--nproc", "2", "--work_dir", work.string(), "--",
                    "--quiet", "--config", config, "--run_dir", run.string()});
  ASSERT_TRUE(WaitForCheckpoint(run));
  ASSERT_EQ(::kill(l.process.pid(), SIGTERM), 0);
  EXPECT_EQ(Wait(l), 128 + SIGTERM) << ReadFile(l.err);
  EXPECT_THAT(ReadFile(l.out),
              HasSubstr("[rank 0] stopped after a checkpoint at "));
  EXPECT_THAT(ReadFile(l.err),
              HasSubstr("distill_launch: got SIGTERM; passing it to "
                        "the ranks, which checkpoint and stop\n"));
  EXPECT_FALSE(fs::exists(run / "summary.json"));
  ExpectNoneLeft(work, 2);

  ASSERT_EQ(Run({"--nproc", "2", "--", "--quiet", "--config", config,
                 "--run_dir", run.string(), "--resume"}),
            0)
      << ReadFile(last_.err);
  auto summary = nlohmann::json::parse(ReadFile(run / "summary.json"));
  EXPECT_EQ(summary["steps"], 2 * 3200 / 32);
}

// Sends `signo` to a one-rank distillation's launcher once a checkpoint
// exists and checks the rank stopped after it, the launcher exited
// `exit_code` and nothing is left running. The launcher's stderr.
std::string LaunchTest::StopOneRankWith(int signo, int exit_code) {
  const fs::path teacher = TeacherWeights();
  const std::string config = DistillConfig(teacher, 3200);
  const fs::path run = dir_ / "run", work = dir_ / "work";
  fs::create_directories(work);
  Launch l = Start({"--nproc", "1", "--work_dir", work.string(), "--",
                    "--quiet", "--config", config, "--run_dir", run.string()});
  EXPECT_TRUE(WaitForCheckpoint(run));
  EXPECT_EQ(::kill(l.process.pid(), signo), 0);
  EXPECT_EQ(Wait(l), exit_code) << ReadFile(l.err);
  EXPECT_THAT(ReadFile(l.out),
              HasSubstr("[rank 0] stopped after a checkpoint at "));
  EXPECT_FALSE(fs::exists(run / "summary.json"));
  ExpectNoneLeft(work, 1);
  return ReadFile(l.err);
}

// SIGHUP (the terminal closed) stops the ranks at a checkpoint as SIGTERM
// does; before, it killed the launcher and left the ranks running.
TEST_F(LaunchTest, SighupStopsTheRanksAtACheckpoint) {
  EXPECT_THAT(StopOneRankWith(SIGHUP, 128 + SIGTERM),
              HasSubstr("distill_launch: got SIGHUP; passing SIGTERM to the "
                        "ranks, which checkpoint and stop\n"));
}

// SIGUSR1, the preemption notice a scheduler sends, stops the ranks at a
// checkpoint too, with its own status: 128 + SIGUSR1 (138).
TEST_F(LaunchTest, SigusrOneIsAPreemptionNotice) {
  StopOneRankWith(SIGUSR1, 128 + SIGUSR1);
}

TEST_F(LaunchTest, BadCommandLinesSayWhatIsWrong) {
  EXPECT_EQ(Run({"--nproc", "0", "--", "--config", "x.pbtxt"}), 1);
  EXPECT_EQ(ReadFile(last_.err),
            "distill_launch: error: --nproc must be >= 1\n");
  EXPECT_EQ(Run({"--nproc", "2"}), 1);
  EXPECT_EQ(
      ReadFile(last_.err),
      "distill_launch: error: no distill arguments: add -- --config FILE\n");
  EXPECT_EQ(Run({"--nproc", "1", "stray", "--", "--config", "x.pbtxt"}), 1);
  EXPECT_EQ(
      ReadFile(last_.err),
      "distill_launch: error: unexpected argument 'stray'; distill's flags "
      "go after --\n");
  EXPECT_EQ(
      Run({"--distill", "/nonexistent/distill", "--", "--config", "x.pbtxt"}),
      1);
  EXPECT_EQ(
      ReadFile(last_.err),
      "distill_launch: error: cannot run /nonexistent/distill: No such file "
      "or directory\n");
  EXPECT_EQ(Run({"--teachers", "1", "--teacher_args",
                 "--arch mlp --host ::", "--", "--config", "x.pbtxt"}),
            1);
  EXPECT_EQ(ReadFile(last_.err),
            "distill_launch: error: --teacher_args sets --host; give the "
            "teachers' address as --teacher_host, where the health checks and "
            "the ranks reach them\n");
}

// With teacher servers: the ranks reach the teacher over gRPC.
TEST_F(LaunchTest, TwoRanksAndOneTeacherServer) {
  if (!HaveTeacherServer()) GTEST_SKIP() << "no teacher_server built";
  const fs::path teacher = TeacherWeights();
  const std::string config = DistillConfig(teacher, 256);
  const fs::path run = dir_ / "run", work = dir_ / "work";
  fs::create_directories(work);
  ASSERT_EQ(Run({"--nproc", "2", "--teachers", "1", "--teacher_args",
                 "--arch mlp --weights " + teacher.string(), "--work_dir",
                 work.string(), "--", "--quiet", "--config", config,
                 "--run_dir", run.string()}),
            0)
      << ReadFile(last_.err);
  auto summary = nlohmann::json::parse(ReadFile(run / "summary.json"));
  EXPECT_EQ(summary["steps"], 2 * 256 / 32);
  auto record = nlohmann::json::parse(ReadFile(work / "attempt-0.json"));
  const std::string endpoint = record["teachers"][0]["endpoint"];
  EXPECT_THAT(
      ReadFile(last_.err),
      HasSubstr("distill_launch: teacher 0 is serving at " + endpoint + "\n"));
  ExpectNoneLeft(work, 3);
}

// A teacher serving TLS with a bearer token: the launcher health-checks it
// over TLS with the CA it was given and hands the CA and the token to the
// ranks. With a CA that did not sign the teacher's certificate, the
// timeout says why the health check kept failing.
TEST_F(LaunchTest, TlsTeacherWithATokenServesTheRanks) {
  if (!HaveTeacherServer()) GTEST_SKIP() << "no teacher_server built";
  const fs::path key = dir_ / "cert.key", cert = dir_ / "cert.pem";
  const fs::path other = dir_ / "other.pem";
  for (const char* name : {"cert", "other"}) {
    const Outcome made =
        MakeSelfSignedCertificate(dir_, name, "localhost", "IP:127.0.0.1");
    ASSERT_EQ(made.exit_code, 0) << made.err;
  }
  const fs::path token = Write("token", "s3cret\n");
  const fs::path teacher = TeacherWeights();
  const std::string config = DistillConfig(teacher, 256);
  const std::string teacher_args = "--arch mlp --weights " + teacher.string() +
                                   " --tls_cert " + cert.string() +
                                   " --tls_key " + key.string() +
                                   " --token_file " + token.string();
  const fs::path run = dir_ / "run", work = dir_ / "work";
  fs::create_directories(work);
  ASSERT_EQ(
      Run({"--nproc", "2", "--teachers", "1", "--teacher_args", teacher_args,
           "--teacher_tls_ca", cert.string(), "--teacher_token_file",
           token.string(), "--work_dir", work.string(), "--", "--quiet",
           "--config", config, "--run_dir", run.string()}),
      0)
      << ReadFile(last_.err);
  auto summary = nlohmann::json::parse(ReadFile(run / "summary.json"));
  EXPECT_EQ(summary["steps"], 2 * 256 / 32);
  ExpectNoneLeft(work, 3);

  const fs::path work2 = dir_ / "work2";
  fs::create_directories(work2);
  EXPECT_EQ(
      Run({"--nproc", "1", "--teachers", "1", "--teacher_args", teacher_args,
           "--teacher_tls_ca", other.string(), "--teacher_timeout_s", "3",
           "--work_dir", work2.string(), "--", "--quiet", "--config", config,
           "--run_dir", (dir_ / "run2").string()}),
      1);
  const std::string err = ReadFile(last_.err);
  EXPECT_THAT(err, HasSubstr("distill_launch: error: the job failed 1 time "
                             "and --max_restarts=0 is spent: teacher 0 was "
                             "not serving after 3s; last health check: health "
                             "check of 127.0.0.1:"));
  EXPECT_THAT(err, HasSubstr("certificate verify failed")) << err;
  // gRPC's own log lines (one per failed handshake) stay out of it.
  EXPECT_THAT(err, Not(HasSubstr("ssl_transport_security"))) << err;
  EXPECT_FALSE(fs::exists(dir_ / "run2" / "summary.json"));

  // A CA file that cannot be read is refused before anything starts.
  EXPECT_EQ(Run({"--teachers", "1", "--teacher_args", teacher_args,
                 "--teacher_tls_ca", (dir_ / "missing.pem").string(), "--",
                 "--config", config}),
            1);
  EXPECT_THAT(ReadFile(last_.err),
              HasSubstr("distill_launch: error: --teacher_tls_ca " +
                        (dir_ / "missing.pem").string()));
}

// A teacher that dies mid-run takes the group down and back up.
TEST_F(LaunchTest, KilledTeacherRestartsTheGroup) {
  if (!HaveTeacherServer()) GTEST_SKIP() << "no teacher_server built";
  const fs::path teacher = TeacherWeights();
  const std::string config = DistillConfig(teacher, 3200);
  const fs::path run = dir_ / "run", work = dir_ / "work";
  fs::create_directories(work);
  Launch l =
      Start({"--nproc", "2", "--teachers", "1", "--max_restarts", "1",
             "--teacher_args", "--arch mlp --weights " + teacher.string(),
             "--work_dir", work.string(), "--", "--quiet", "--config", config,
             "--run_dir", run.string()});
  ASSERT_TRUE(WaitForCheckpoint(run));
  auto record = nlohmann::json::parse(ReadFile(work / "attempt-0.json"));
  ASSERT_EQ(::kill(record["teachers"][0]["pid"].get<pid_t>(), SIGKILL), 0);
  ASSERT_EQ(Wait(l), 0) << ReadFile(l.err);
  EXPECT_THAT(
      ReadFile(l.err),
      HasSubstr("distill_launch: teacher 0 was killed by signal 9 (SIGKILL)"));
  auto summary = nlohmann::json::parse(ReadFile(run / "summary.json"));
  EXPECT_EQ(summary["steps"], 2 * 3200 / 32);
  ExpectNoneLeft(work, 6);
}

}  // namespace
