// Checkpoints: everything a run needs to continue exactly where it stopped
// (model, optimizer, the position in the data, RNG state), written
// atomically (temporary file + rename) into <run_dir>/checkpoints/ as
// ckpt-<step>.pt. Functions here are not thread-safe with respect to the
// same run directory; one rank writes.
#ifndef DISTILL_TRAINER_INTERNAL_CHECKPOINT_H_
#define DISTILL_TRAINER_INTERNAL_CHECKPOINT_H_

#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "student/model.h"

namespace distill::trainer {

// On-policy windows sampled by the student: the tokens [N, S + 1] and each
// row's length up to and including its first stop id (student::
// BatchSample). Empty tensors: none.
struct SampledWindows {
  torch::Tensor tokens;
  torch::Tensor lengths;
  // With on_policy.student_top_k = k: int64 [N, S, k], the student's k most
  // likely ids at each input position (the teacher is asked at them).
  torch::Tensor top_ids;
};

// Where training stands between two steps.
struct TrainPosition {
  int64_t epoch = 0;  // the epoch in progress (0-based)
  // Samples of that epoch already trained on, counted over all ranks, so a
  // job can resume on another number of ranks.
  int64_t cursor = 0;
  int64_t global_step = 0;  // optimizer steps taken so far
  // This rank's windows of the next step, when on-policy sampling ran
  // ahead of it (overlap); the leader's are checkpointed.
  SampledWindows sampled;
};

// Writes a checkpoint for `position` and prunes all but the newest `keep`.
// Returns the path written.
absl::StatusOr<std::string> SaveCheckpoint(const std::string& run_dir,
                                           student::Model& model,
                                           torch::optim::Optimizer& optimizer,
                                           const TrainPosition& position,
                                           int keep);

// Restores model, optimizer and the global RNG from `path` and returns the
// position. FailedPrecondition when the checkpoint holds another model;
// DataLoss when the file is unreadable or lacks part of the training state.
absl::StatusOr<TrainPosition> LoadCheckpoint(
    const std::string& path, student::Model& model,
    torch::optim::Optimizer& optimizer);

// What LoadNewestCheckpoint restored.
struct ResumePoint {
  std::string path;  // empty: the run has no checkpoint; nothing restored
  TrainPosition position;
  // "<path>: <reason>" for each newer checkpoint that could not be read.
  std::vector<std::string> skipped;
};

// Restores the newest checkpoint of `run_dir` that reads back whole. A
// damaged one (DataLoss: truncated by a crash or a full disk) is skipped,
// with its reason, for the next older one. FailedPrecondition from a
// checkpoint of another model is returned at once: the older ones of the
// run hold that model too. DataLoss when no checkpoint reads back, naming
// each.
absl::StatusOr<ResumePoint> LoadNewestCheckpoint(
    const std::string& run_dir, student::Model& model,
    torch::optim::Optimizer& optimizer);

}  // namespace distill::trainer

#endif  // DISTILL_TRAINER_INTERNAL_CHECKPOINT_H_
