// RemoteTeacher's stats: answer latencies, samples, resends and endpoint
// failures since the last TakeStats, and the client's description.
#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "teacher_server/codec.h"
#include "trainer/teacher/internal/remote_state.h"

namespace distill::trainer {

nlohmann::json RemoteTeacher::Impl::TakeStats() {
  absl::MutexLock lock(&mu_);
  nlohmann::json stats;
  const int64_t batches = static_cast<int64_t>(latencies_ms_.size());
  stats["teacher_batches"] = batches;
  stats["teacher_samples"] = samples_;
  stats["teacher_resent_batches"] = resent_;
  stats["teacher_endpoint_failures"] = failures_;
  int64_t up = 0;
  for (const auto& endpoint : endpoints_) up += endpoint->up;
  stats["teacher_endpoints_up"] = up;
  if (batches > 0) {
    std::sort(latencies_ms_.begin(), latencies_ms_.end());
    double sum = 0;
    for (double l : latencies_ms_) sum += l;
    stats["teacher_latency_ms_mean"] = sum / batches;
    const int64_t p95 = static_cast<int64_t>(std::ceil(0.95 * batches)) - 1;
    stats["teacher_latency_ms_p95"] = latencies_ms_[std::max<int64_t>(p95, 0)];
    if (teacher::IsTopK(options_.encoding) && samples_ > 0) {
      stats["teacher_topk_mass_mean"] = topk_mass_sum_ / samples_;
    }
  }
  latencies_ms_.clear();
  samples_ = resent_ = failures_ = 0;
  topk_mass_sum_ = 0;
  return stats;
}

std::string RemoteTeacher::Impl::description() const {
  std::vector<std::string> addresses;
  {
    absl::MutexLock lock(&mu_);
    for (const auto& endpoint : endpoints_)
      addresses.push_back(endpoint->address);
  }
  return absl::StrCat("teacher servers ", absl::StrJoin(addresses, ", "), " ('",
                      info_.model_name(), "', hash ",
                      info_.model_hash().substr(0, 12), ")");
}

}  // namespace distill::trainer
