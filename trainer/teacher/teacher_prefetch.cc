#include "trainer/teacher/teacher_prefetch.h"

#include <chrono>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace distill::trainer {
namespace {

// Counters summed over an epoch.
constexpr const char* kCounts[] = {"teacher_batches",
                                   "teacher_samples",
                                   "teacher_waits",
                                   "teacher_resent_batches",
                                   "teacher_endpoint_failures",
                                   "teacher_cache_hits"};

double Number(const nlohmann::json& j, const char* key) {
  return j.contains(key) ? j[key].get<double>() : 0.0;
}

}  // namespace

TargetPrefetcher::TargetPrefetcher(
    data::Loader& loader, TeacherClient* teacher, int depth,
    std::function<double(int64_t)> temperature_at, Rewrite rewrite)
    : loader_(loader),
      teacher_(teacher),
      depth_(depth),
      temperature_at_(std::move(temperature_at)),
      rewrite_(std::move(rewrite)) {}

absl::StatusOr<std::optional<TargetPrefetcher::Item>> TargetPrefetcher::Next() {
  while (!loader_done_ && static_cast<int>(queue_.size()) <= depth_) {
    absl::StatusOr<std::optional<data::Batch>> batch = loader_.Next();
    if (!batch.ok()) return batch.status();
    if (!*batch) {
      loader_done_ = true;
      break;
    }
    if (rewrite_) {
      absl::StatusOr<data::Batch> rewritten =
          rewrite_(std::move(**batch), submitted_);
      if (!rewritten.ok()) return rewritten.status();
      **batch = std::move(*rewritten);
    }
    Entry entry{std::move(**batch), std::nullopt};
    if (teacher_ != nullptr) {
      const auto submit_start = std::chrono::steady_clock::now();
      entry.targets =
          teacher_->Submit(entry.batch, temperature_at_(submitted_));
      teacher_seconds_ += std::chrono::duration<double>(
                              std::chrono::steady_clock::now() - submit_start)
                              .count();
    }
    ++submitted_;
    queue_.push_back(std::move(entry));
  }
  if (queue_.empty()) return std::nullopt;
  Entry entry = std::move(queue_.front());
  queue_.pop_front();
  ++steps_;
  depth_sum_ += static_cast<int64_t>(queue_.size());
  Item item{std::move(entry.batch), std::nullopt};
  if (entry.targets) {
    const auto start = std::chrono::steady_clock::now();
    const auto state = entry.targets->wait_for(std::chrono::seconds(0));
    absl::StatusOr<losses::TeacherTargets> targets = entry.targets->get();
    const double waited =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
            .count();
    teacher_seconds_ += waited;
    // A deferred future (a cache miss) does its waiting inside get().
    if (state == std::future_status::timeout ||
        (state == std::future_status::deferred && waited > 1e-3)) {
      ++waits_;
      wait_seconds_ += waited;
    }
    if (!targets.ok()) {
      teacher_failed_ = true;
      return targets.status();
    }
    const int64_t rows = item.batch.labels.size(0);
    if (targets->batch_size() != rows) {
      teacher_failed_ = true;
      return absl::InternalError(absl::StrCat("the teacher answered ",
                                              targets->batch_size(),
                                              " rows for a batch of ", rows));
    }
    item.targets = std::move(*targets);
  }
  return item;
}

nlohmann::json TargetPrefetcher::TakeStats() {
  nlohmann::json stats =
      teacher_ != nullptr ? teacher_->TakeStats() : nlohmann::json::object();
  stats["teacher_waits"] = waits_;
  stats["teacher_wait_seconds"] = wait_seconds_;
  stats["teacher_queue_depth"] =
      steps_ > 0 ? static_cast<double>(depth_sum_) / steps_ : 0.0;
  for (const char* key : kCounts) {
    if (stats.contains(key))
      epoch_[key] = Number(epoch_, key) + Number(stats, key);
  }
  epoch_["teacher_wait_seconds"] =
      Number(epoch_, "teacher_wait_seconds") + wait_seconds_;
  const double batches = Number(stats, "teacher_batches");
  epoch_["latency_ms_sum"] = Number(epoch_, "latency_ms_sum") +
                             batches * Number(stats, "teacher_latency_ms_mean");
  epoch_["topk_mass_sum"] = Number(epoch_, "topk_mass_sum") +
                            Number(stats, "teacher_samples") *
                                Number(stats, "teacher_topk_mass_mean");
  if (stats.contains("teacher_topk_mass_mean")) epoch_["topk"] = true;
  waits_ = steps_ = depth_sum_ = 0;
  wait_seconds_ = 0;
  return stats;
}

nlohmann::json TargetPrefetcher::EpochStats() {
  TakeStats();
  nlohmann::json out = nlohmann::json::object();
  for (const char* key : kCounts) {
    if (epoch_.contains(key)) out[key] = epoch_[key].get<int64_t>();
  }
  out["teacher_wait_seconds"] = Number(epoch_, "teacher_wait_seconds");
  const double batches = Number(epoch_, "teacher_batches");
  if (batches > 0) {
    out["teacher_latency_ms_mean"] = Number(epoch_, "latency_ms_sum") / batches;
  }
  const double samples = Number(epoch_, "teacher_samples");
  if (epoch_.contains("topk") && samples > 0) {
    out["teacher_topk_mass_mean"] = Number(epoch_, "topk_mass_sum") / samples;
  }
  return out;
}

std::string TeacherProgress(const nlohmann::json& stats) {
  if (!stats.contains("teacher_latency_ms_mean")) return "";
  std::string line =
      absl::StrFormat(" | teacher %.1f ms (p95 %.1f) queue %.1f waited %d",
                      Number(stats, "teacher_latency_ms_mean"),
                      Number(stats, "teacher_latency_ms_p95"),
                      Number(stats, "teacher_queue_depth"),
                      static_cast<int>(Number(stats, "teacher_waits")));
  if (stats.contains("teacher_topk_mass_mean")) {
    absl::StrAppendFormat(&line, " top-k mass %.3f",
                          Number(stats, "teacher_topk_mass_mean"));
  }
  return line;
}

}  // namespace distill::trainer
