// The training loop's prefetch stage: pairs each loader batch with its
// teacher targets, submitting up to `depth` batches ahead of the one being
// trained so a remote teacher works while the student steps. Also keeps the
// teacher's side of the metrics: latency (from the client), queue depth, and
// how many steps waited for targets and for how long. Used by one thread.
#ifndef DISTILL_TRAINER_TEACHER_TEACHER_PREFETCH_H_
#define DISTILL_TRAINER_TEACHER_TEACHER_PREFETCH_H_

#include <cstdint>
#include <deque>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "data/loader.h"
#include "trainer/teacher/teacher_client.h"

namespace distill::trainer {

class TargetPrefetcher {
 public:
  struct Item {
    data::Batch batch;
    // Unset when there is no teacher.
    std::optional<losses::TeacherTargets> targets;
  };

  // Replaces the i-th batch (0-based) read from the loader before its
  // targets are asked for (on-policy steps sample new windows); its error
  // is returned by Next().
  using Rewrite =
      std::function<absl::StatusOr<data::Batch>(data::Batch, int64_t i)>;

  // `loader` and `teacher` (null: no targets) must outlive this.
  // `temperature_at(i)` is the temperature of the i-th batch this returns
  // (0-based), known ahead from the schedule. `rewrite` may be empty.
  TargetPrefetcher(data::Loader& loader, TeacherClient* teacher, int depth,
                   std::function<double(int64_t)> temperature_at,
                   Rewrite rewrite = nullptr);

  // The next batch with its targets; std::nullopt after the last. A
  // teacher's error is returned as is, and teacher_failed() says so.
  absl::StatusOr<std::optional<Item>> Next();
  bool teacher_failed() const { return teacher_failed_; }
  // Seconds spent inside the teacher's Submit and waiting for its answers
  // since construction: the teacher's share of the time Next() took.
  double teacher_seconds() const { return teacher_seconds_; }

  // Stats since the previous call: the client's (teacher_latency_ms_mean,
  // ...) plus teacher_waits, teacher_wait_seconds and teacher_queue_depth
  // (batches submitted ahead, mean over the steps).
  nlohmann::json TakeStats();
  // Totals of the epoch so far (counts summed, means weighted).
  nlohmann::json EpochStats();

 private:
  struct Entry {
    data::Batch batch;
    std::optional<TargetsFuture> targets;
  };

  data::Loader& loader_;
  TeacherClient* const teacher_;
  const int depth_;
  const std::function<double(int64_t)> temperature_at_;
  const Rewrite rewrite_;
  std::deque<Entry> queue_;
  bool loader_done_ = false;
  bool teacher_failed_ = false;
  int64_t submitted_ = 0;
  double teacher_seconds_ = 0;

  // Since the last TakeStats, and for the epoch.
  int64_t waits_ = 0, steps_ = 0, depth_sum_ = 0;
  double wait_seconds_ = 0;
  nlohmann::json epoch_ = nlohmann::json::object();
};

// " | teacher 3.1 ms (p95 5.0) waited 2" for a progress line, from
// TakeStats(); empty when no batch was answered.
std::string TeacherProgress(const nlohmann::json& stats);

}  // namespace distill::trainer

#endif  // DISTILL_TRAINER_TEACHER_TEACHER_PREFETCH_H_
