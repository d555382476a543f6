// Where the trainer gets teacher targets from. The training loop sees only
// TeacherClient, so the in-process teacher (in_process_teacher.h) and the
// gRPC client of the teacher servers (teacher_connect.h) are
// interchangeable, and a test can inject its own. A TeacherClient is used
// by one training loop at a time. Targets() is the synchronous call;
// Submit() lets the loop ask for the next batches' targets ahead of time (a
// remote teacher then works while the student steps).
#ifndef DISTILL_TRAINER_TEACHER_TEACHER_CLIENT_H_
#define DISTILL_TRAINER_TEACHER_TEACHER_CLIENT_H_

#include <cstdint>
#include <future>
#include <nlohmann/json.hpp>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "data/dataset.h"
#include "losses/teacher_targets.h"

namespace distill::trainer {

using TargetsFuture = std::future<absl::StatusOr<losses::TeacherTargets>>;

class TeacherClient {
 public:
  virtual ~TeacherClient() = default;
  // Soft targets softmax(z / temperature) for every sample of `batch`, in
  // the batch's order. `batch.inputs` are un-augmented or augmented inputs
  // exactly as the student sees them. With `batch.teacher_indices`, top-k
  // form targets at those class ids instead (the teacher's probabilities
  // there and the mass of the rest) from the teachers that can (in process
  // and servers; others fail).
  virtual absl::StatusOr<losses::TeacherTargets> Targets(
      const data::Batch& batch, double temperature) = 0;
  // Starts on the targets of `batch` and returns their future; a future may
  // be dropped unread. Default: computes them now with Targets().
  virtual TargetsFuture Submit(const data::Batch& batch, double temperature);
  // True when the targets honour `batch.teacher_indices` (see Targets).
  // Default: false.
  virtual bool scores_at_indices() const { return false; }
  // True when Submit returns before the targets are ready, so submitting
  // ahead overlaps teacher work with the caller's. Default: false.
  virtual bool asynchronous() const { return false; }
  // Counters and latencies since the previous call, for metrics.jsonl
  // ("teacher_latency_ms_mean", ...). Default: none.
  virtual nlohmann::json TakeStats() { return nlohmann::json::object(); }
  // Called by the loop after every completed epoch (a cache persists
  // itself). Default: nothing.
  virtual absl::Status EpochDone() { return absl::OkStatus(); }
  // The teacher to ask about inputs that are not training samples (the
  // evaluation's windows): this one, the client a cache wraps (whose table
  // is keyed by training sample id), or nullptr when only the training
  // samples have targets (an offline target store). Default: this.
  virtual TeacherClient* any_input_teacher() { return this; }
  // SHA-256 (hex) of the teacher's model file when the client knows it
  // (teacher servers state theirs in Info). Default: empty.
  virtual std::string model_hash() const { return std::string(); }
  // HIDDEN_FP16 teachers: the width H of the hidden states they answer
  // (known once connected). Default: 0.
  virtual int64_t hidden_size() const { return 0; }
  // Classes the teacher predicts.
  virtual int64_t num_classes() const = 0;
  virtual std::string description() const = 0;
};

}  // namespace distill::trainer

#endif  // DISTILL_TRAINER_TEACHER_TEACHER_CLIENT_H_
