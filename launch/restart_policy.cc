#include "launch/restart_policy.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace distill::launch {

RestartPolicy::RestartPolicy(int max_restarts) : max_restarts_(max_restarts) {}

bool RestartPolicy::RecordFailure(const std::string& cause) {
  ++failures_;
  bool known = false;
  for (auto& [text, count] : causes_) {
    if (text == cause) {
      ++count;
      known = true;
    }
  }
  if (!known) causes_.emplace_back(cause, 1);
  if (restarts_ >= max_restarts_) return false;
  ++restarts_;
  return true;
}

std::string RestartPolicy::GiveUpMessage() const {
  std::vector<std::string> parts;
  for (const auto& [text, count] : causes_) {
    parts.push_back(
        absl::StrCat(text, " (", count, count == 1 ? " time)" : " times)"));
  }
  return absl::StrCat("the job failed ", failures_,
                      failures_ == 1 ? " time" : " times",
                      " and --max_restarts=", max_restarts_,
                      " is spent: ", absl::StrJoin(parts, "; "));
}

}  // namespace distill::launch
