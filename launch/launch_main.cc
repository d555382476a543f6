// The `distill_launch` binary: one distillation job on this machine.
//
//   distill_launch --nproc N [--teachers M] [--max_restarts R]
//                  [--teacher_args "--arch cnn_teacher --weights t.pt"]
//                  -- --config job.pbtxt [more distill flags]
//
// Everything after `--` goes to every `distill` rank. Exit status: 0 when
// every rank finished; the ranks' status (130, 138, 143) when SIGINT,
// SIGUSR1 or SIGTERM (or SIGHUP, passed on as SIGTERM) stopped them after
// a checkpoint; 1 with one
// "distill_launch: error: ..." line when the restarts are spent or the
// command line is wrong.
#include <grpc/support/log.h>
#include <stdlib.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_split.h"
#include "absl/time/time.h"
#include "launch/launcher.h"
#include "launch/orphan_guard.h"
#include "launch/supervisor.h"

ABSL_FLAG(int, nproc, 1, "Number of distill ranks.");
ABSL_FLAG(int, teachers, 0,
          "Number of teacher servers to start before the ranks (0: the "
          "config's in-process teacher).");
ABSL_FLAG(int, max_restarts, 0,
          "Restarts of the whole group, from the newest checkpoint, after a "
          "rank or teacher fails.");
ABSL_FLAG(std::string, teacher_args, "",
          "Arguments for every teacher server, separated by spaces, e.g. "
          "\"--arch cnn_teacher --weights teacher/model.pt\".");
ABSL_FLAG(std::string, teacher_host, "127.0.0.1",
          "Address the teachers listen on and the ranks reach them at; with "
          "TLS, a name their certificates carry.");
ABSL_FLAG(std::string, teacher_tls_ca, "",
          "PEM root certificates: health-check the teachers over TLS and "
          "pass --teacher_tls_ca to the ranks.");
ABSL_FLAG(std::string, teacher_token_file, "",
          "Bearer token file for the health checks, passed to the ranks as "
          "--teacher_token_file.");
ABSL_FLAG(std::string, distill, "",
          "The distill program (default: next to distill_launch).");
ABSL_FLAG(std::string, teacher_server, "",
          "The teacher_server program (default: next to distill_launch).");
ABSL_FLAG(std::string, work_dir, "",
          "Directory for teachers' port files and attempt-<k>.json records "
          "(default: a temporary directory removed at exit).");
ABSL_FLAG(int, master_port, 0,
          "Rendezvous port of rank 0 (0: a free port for every attempt).");
ABSL_FLAG(double, teacher_timeout_s, 120,
          "Seconds teachers may take until their health check says SERVING.");
ABSL_FLAG(double, stop_grace_s, 30,
          "Seconds between SIGTERM and SIGKILL when stopping the group.");

namespace {

namespace fs = std::filesystem;

int Fail(const std::string& message) {
  std::fprintf(stderr, "distill_launch: error: %s\n", message.c_str());
  return 1;
}

std::string SelfDir() {
  std::error_code ec;
  const fs::path self = fs::read_symlink("/proc/self/exe", ec);
  return ec ? std::string(".") : self.parent_path().string();
}

// gRPC logs every failed connection of a health check (a teacher still
// starting, a handshake refused); the launcher reports the last one itself
// when the teacher does not come up. GRPC_VERBOSITY set keeps gRPC's log.
void QuietGrpcLog(gpr_log_func_args* /*args*/) {}

}  // namespace

int main(int argc, char** argv) {
  if (std::getenv("GRPC_VERBOSITY") == nullptr) {
    gpr_set_log_function(QuietGrpcLog);
  }
  // Before any thread exists (gRPC starts some), so all of them inherit it.
  if (absl::Status s = distill::launch::Supervisor::BlockSignals(); !s.ok()) {
    return Fail(std::string(s.message()));
  }
  // Also before any thread: the guard is a fork of this process.
  if (absl::Status s = distill::launch::OrphanGuard::Start(); !s.ok()) {
    return Fail(std::string(s.message()));
  }
  struct StopGuard {
    ~StopGuard() { distill::launch::OrphanGuard::Stop(); }
  } stop_guard;
  absl::SetProgramUsageMessage(
      "distill_launch --nproc N [--teachers M] [--max_restarts R] -- "
      "--config FILE [distill flags]: start teacher servers and distill "
      "ranks on this machine, restarting the group after a failure");
  // Everything after the first "--" belongs to the ranks; only what comes
  // before it is the launcher's.
  int separator = argc;
  for (int i = 1; i < argc; ++i) {
    if (std::string(argv[i]) == "--") {
      separator = i;
      break;
    }
  }
  distill::launch::LaunchOptions options;
  for (int i = separator + 1; i < argc; ++i)
    options.distill_args.emplace_back(argv[i]);
  std::vector<char*> rest = absl::ParseCommandLine(separator, argv);
  if (rest.size() > 1) {
    return Fail(std::string("unexpected argument '") + rest[1] +
                "'; distill's flags go after --");
  }
  if (options.distill_args.empty()) {
    return Fail("no distill arguments: add -- --config FILE");
  }
  options.nproc = absl::GetFlag(FLAGS_nproc);
  options.teachers = absl::GetFlag(FLAGS_teachers);
  options.max_restarts = absl::GetFlag(FLAGS_max_restarts);
  options.master_port = absl::GetFlag(FLAGS_master_port);
  for (absl::string_view arg :
       absl::StrSplit(absl::GetFlag(FLAGS_teacher_args),
                      absl::ByAnyChar(" \t\n"), absl::SkipEmpty())) {
    options.teacher_args.emplace_back(arg);
  }
  options.teacher_host = absl::GetFlag(FLAGS_teacher_host);
  options.teacher_tls_ca_file = absl::GetFlag(FLAGS_teacher_tls_ca);
  options.teacher_token_file = absl::GetFlag(FLAGS_teacher_token_file);
  const std::string self_dir = SelfDir();
  options.distill_path = absl::GetFlag(FLAGS_distill);
  if (options.distill_path.empty())
    options.distill_path = self_dir + "/distill";
  options.teacher_server_path = absl::GetFlag(FLAGS_teacher_server);
  if (options.teacher_server_path.empty()) {
    options.teacher_server_path = self_dir + "/teacher_server";
  }
  if (absl::GetFlag(FLAGS_teacher_timeout_s) <= 0 ||
      absl::GetFlag(FLAGS_stop_grace_s) < 0) {
    return Fail("--teacher_timeout_s must be > 0 and --stop_grace_s >= 0");
  }
  options.teacher_timeout =
      absl::Seconds(absl::GetFlag(FLAGS_teacher_timeout_s));
  options.stop_grace = absl::Seconds(absl::GetFlag(FLAGS_stop_grace_s));

  std::string temp_dir;
  options.work_dir = absl::GetFlag(FLAGS_work_dir);
  if (options.work_dir.empty()) {
    std::string pattern =
        (fs::temp_directory_path() / "distill_launch.XXXXXX").string();
    if (::mkdtemp(pattern.data()) == nullptr) {
      return Fail("cannot create a temporary work directory");
    }
    temp_dir = options.work_dir = pattern;
    distill::launch::OrphanGuard::RemoveOnDeath(temp_dir);
  }

  absl::StatusOr<int> code = distill::launch::RunLaunch(options);
  if (!temp_dir.empty()) {
    std::error_code ec;
    fs::remove_all(temp_dir, ec);
  }
  if (!code.ok()) return Fail(std::string(code.status().message()));
  return *code;
}
