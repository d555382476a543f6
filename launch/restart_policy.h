// When the launcher restarts a failed group, and what it says when it stops
// trying. Pure bookkeeping, no processes; not thread-safe.
#ifndef DISTILL_LAUNCH_RESTART_POLICY_H_
#define DISTILL_LAUNCH_RESTART_POLICY_H_

#include <string>
#include <utility>
#include <vector>

namespace distill::launch {

class RestartPolicy {
 public:
  // Up to `max_restarts` restarts, i.e. max_restarts + 1 attempts in all.
  explicit RestartPolicy(int max_restarts);

  // Records that an attempt failed because of `cause` (e.g. "rank 1 was
  // killed by signal 9 (SIGKILL)"). Returns true when the group may start
  // again, counting that restart.
  bool RecordFailure(const std::string& cause);

  // Restarts granted so far.
  int restarts() const { return restarts_; }
  int max_restarts() const { return max_restarts_; }

  // Why the launcher gave up, each distinct cause with its count in the
  // order first seen: "the job failed 3 times and --max_restarts=2 is
  // spent: rank 0 exited with status 1 (3 times)".
  std::string GiveUpMessage() const;

 private:
  int max_restarts_;
  int restarts_ = 0;
  int failures_ = 0;
  std::vector<std::pair<std::string, int>> causes_;
};

}  // namespace distill::launch

#endif  // DISTILL_LAUNCH_RESTART_POLICY_H_
