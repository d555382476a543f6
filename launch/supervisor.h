// Runs the launcher's child processes: each in its own process group (so a
// signal reaches everything it started), its stdout and stderr copied to the
// launcher's own streams one whole line at a time with a "[role index] "
// prefix, reaped with waitpid, and killed (SIGKILL) should the launcher die
// first. The launcher's own signals arrive through a signalfd in the same
// poll loop, so there is one thread and no handler state.
//
// Supervisor::BlockSignals() must run at the top of main, before any thread
// exists, so that every thread the process ever starts inherits the mask.
// A Supervisor is not thread-safe; one per process.
#ifndef DISTILL_LAUNCH_SUPERVISOR_H_
#define DISTILL_LAUNCH_SUPERVISOR_H_

#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "launch/line_prefixer.h"

namespace distill::launch {

struct ChildSpec {
  // "rank" or "teacher": the output prefix and the name in messages.
  std::string role;
  int index = 0;
  // argv[0] is the program's path (no PATH search).
  std::vector<std::string> argv;
  // "NAME=value" entries set on top of the launcher's environment.
  std::vector<std::string> env;
};

struct ChildExit {
  int id = -1;
  // As waitpid reports it.
  int wait_status = 0;
};

// What happened during one Wait or StopAll.
struct Events {
  std::vector<ChildExit> exits;
  // SIGINT, SIGTERM or SIGUSR1 sent to the launcher, in arrival order.
  std::vector<int> signals;
  bool empty() const { return exits.empty() && signals.empty(); }
};

class Supervisor {
 public:
  // The signals the launcher handles: SIGINT, SIGTERM, SIGUSR1 and SIGCHLD
  // are blocked (and read from the signalfd); SIGPIPE is ignored.
  static absl::Status BlockSignals();

  // Children's stdout lines go to `out_fd`, stderr lines to `err_fd`.
  static absl::StatusOr<std::unique_ptr<Supervisor>> Create(int out_fd,
                                                            int err_fd);
  Supervisor(const Supervisor&) = delete;
  Supervisor& operator=(const Supervisor&) = delete;
  // Kills (SIGKILL) and reaps whatever still runs.
  ~Supervisor();

  // Starts a child; returns its id. FailedPrecondition naming the program
  // when it cannot be executed.
  absl::StatusOr<int> Start(const ChildSpec& spec);

  // Waits until a child exits or a signal arrives, at most `timeout`,
  // copying output meanwhile. Returns empty Events on timeout.
  Events Wait(absl::Duration timeout);

  // Sends `signo` to the child's process group (no-op once it exited).
  void Signal(int id, int signo);

  // Stops every running child: SIGTERM to each group, then SIGKILL to those
  // still running after `grace`. Returns once all have exited and their
  // output is copied (the exits and any signals that arrived meanwhile).
  Events StopAll(absl::Duration grace);

  bool running(int id) const;
  pid_t pid(int id) const;
  // "rank 1", "teacher 0".
  std::string name(int id) const;
  const ChildSpec& spec(int id) const;
  int running_count() const;

 private:
  struct Child;
  Supervisor(int signal_fd, int out_fd, int err_fd);

  // Reads whatever output is ready and reaps exited children; appends to
  // `events`. Blocks at most `timeout`.
  void PollOnce(absl::Duration timeout, Events& events);
  void ReapExited(Events& events);
  // Copies the rest of exited children's output until their pipes close
  // (bounded by `timeout` in case a grandchild keeps one open).
  void DrainOutput(absl::Duration timeout);

  int signal_fd_;
  int out_fd_;
  int err_fd_;
  std::vector<std::unique_ptr<Child>> children_;
};

// "rank 1 exited with status 1", "teacher 0 was killed by signal 9 (KILL)".
std::string DescribeExit(const std::string& name, int wait_status);

// The exit code a shell would report for `wait_status`: the status, or
// 128 + the signal number.
int ExitCode(int wait_status);

}  // namespace distill::launch

#endif  // DISTILL_LAUNCH_SUPERVISOR_H_
