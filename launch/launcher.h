// One distillation job on one machine: M teacher servers, then N `distill`
// ranks wired to them, restarted as a group from the newest checkpoint when
// any of them fails (see docs/LAUNCHING.md).
//
// Per attempt: teachers start with `--host H --port 0 --port_file`, and the
// ranks start once every teacher's port file exists and its health check
// (grpc.health.v1, service "distill.v1.Teacher"; over TLS when a CA is
// given) says SERVING. Ranks get the
// torchrun variables (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE,
// MASTER_ADDR, MASTER_PORT, TORCHELASTIC_RESTART_COUNT) and
// `--teacher_endpoints=...` (and the CA and token files); restarted ranks
// also get `--resume`.
// <work_dir>/attempt-<k>.json records each attempt's processes.
// SIGINT/SIGTERM/SIGUSR1 go to the ranks (which checkpoint at the next step
// and exit); the teachers stop once the ranks are gone.
#ifndef DISTILL_LAUNCH_LAUNCHER_H_
#define DISTILL_LAUNCH_LAUNCHER_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace distill::launch {

struct LaunchOptions {
  // Number of `distill` ranks. Default: 1.
  int nproc = 1;
  // Number of teacher servers (0: the config's in-process teacher, if any).
  // Default: 0.
  int teachers = 0;
  // Group restarts after a failure before giving up. Default: 0.
  int max_restarts = 0;
  // Programs to run. Required (teacher_server only when teachers > 0).
  std::string distill_path;
  std::string teacher_server_path;
  // Arguments every rank / every teacher gets.
  std::vector<std::string> distill_args;
  std::vector<std::string> teacher_args;
  // The address teachers listen on and the ranks reach them at; with TLS,
  // a name their certificates carry. Default: 127.0.0.1.
  std::string teacher_host = "127.0.0.1";
  // PEM root certificates: teachers are health-checked over TLS and the
  // ranks get `--teacher_tls_ca`. Default: none (plaintext).
  std::string teacher_tls_ca_file;
  // Bearer token file for the health checks; the ranks get
  // `--teacher_token_file`. Default: none.
  std::string teacher_token_file;
  // Where port files and attempt records go; must exist. Required.
  std::string work_dir;
  // Rendezvous port; 0 picks a free loopback port per attempt. Default: 0.
  int master_port = 0;
  // How long teachers may take to serve. Default: 120 s.
  absl::Duration teacher_timeout = absl::Seconds(120);
  // Between SIGTERM and SIGKILL when stopping the group. Default: 30 s.
  absl::Duration stop_grace = absl::Seconds(30);
  // Children's output and the launcher's own messages. Default: 1 and 2.
  int out_fd = 1;
  int err_fd = 2;
};

// Runs the job to its end. Returns the exit code: 0 when every rank
// finished, the ranks' status (e.g. 143) when a signal stopped them.
// Aborted with the failures and their counts once max_restarts is spent;
// FailedPrecondition when a program cannot be started; InvalidArgument for
// bad options.
absl::StatusOr<int> RunLaunch(const LaunchOptions& options);

}  // namespace distill::launch

#endif  // DISTILL_LAUNCH_LAUNCHER_H_
