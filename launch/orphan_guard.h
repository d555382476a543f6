// What cleans up after a launcher killed with SIGKILL. Its children die
// with it (PR_SET_PDEATHSIG), but what they started does not: a process the
// launcher forks at its start (the guard) outlives it just long enough to
// SIGKILL every process group of a child it was told about and not told is
// gone. The launcher tells it through a socket pair; its end of file, with
// no "stop" before it, means the launcher died. A group that left its
// child's process group (setsid) is not reached.
#ifndef DISTILL_LAUNCH_ORPHAN_GUARD_H_
#define DISTILL_LAUNCH_ORPHAN_GUARD_H_

#include <sys/types.h>

#include <string>

#include "absl/status/status.h"

namespace distill::launch {

class OrphanGuard {
 public:
  // Forks the guard. Call while the process has a single thread, with the
  // signals the guard should not die of (SIGINT, SIGTERM, ...) blocked: it
  // inherits the mask.
  static absl::Status Start();
  // The launcher is ending normally: the guard exits killing nothing, and
  // is waited for.
  static void Stop();

  // A child's process group to kill if the launcher dies, and its release
  // once the child is reaped and its group killed. No-ops without a guard.
  static void Watch(pid_t pgid);
  static void Release(pid_t pgid);
  // A directory the launcher would remove at its end (its temporary work
  // directory): the guard removes it if the launcher dies first.
  static void RemoveOnDeath(const std::string& dir);
};

}  // namespace distill::launch

#endif  // DISTILL_LAUNCH_ORPHAN_GUARD_H_
