// Data-parallel gradient synchronization in the spirit of PyTorch DDP's
// reducer: parameters are grouped into flat buckets in reverse order (the
// order backward produces gradients), a bucket's all-reduce starts from an
// autograd hook as soon as its last gradient is accumulated, while backward
// goes on, and Finish() waits for all of them and writes the averaged
// gradients back. Used by the training loop's thread (autograd runs CPU
// hooks on that same thread).
#ifndef DISTILL_TRAINER_DIST_GRAD_SYNC_H_
#define DISTILL_TRAINER_DIST_GRAD_SYNC_H_

#include <torch/torch.h>

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "trainer/dist/communicator.h"

namespace distill::trainer {

struct GradSyncOptions {
  // Size of the first bucket, small so communication starts early.
  // Default: 1 MiB.
  int64_t first_bucket_bytes = int64_t{1} << 20;
  // Size cap of the other buckets. Default: 25 MiB.
  int64_t bucket_cap_bytes = int64_t{25} << 20;
  // false: all-reduce every bucket after backward instead of from the hooks
  // (for measuring what the overlap is worth). Default: true.
  bool overlap = true;
};

// What the last synchronized backward did, for tests and benchmarks.
struct GradSyncStats {
  int buckets = 0;
  // Buckets whose all-reduce was started from an autograd hook.
  int launched_in_backward = 0;
  // Parameters whose gradient was not yet accumulated when the first
  // bucket's all-reduce started (> 0 proves it overlapped backward).
  int params_pending_at_first_launch = 0;
};

class GradSync {
 public:
  // `named_params` in the module's registration order.
  static absl::StatusOr<std::unique_ptr<GradSync>> Create(
      Communicator& comm,
      std::vector<std::pair<std::string, torch::Tensor>> named_params,
      const GradSyncOptions& options);
  ~GradSync();

  // Copies rank 0's values of `tensors` to every rank.
  absl::Status BroadcastFromRankZero(
      const std::vector<std::pair<std::string, torch::Tensor>>& tensors,
      const std::string& what);

  // Call before backward: whether this backward's gradients are to be
  // synchronized (false for the non-final micro-batches of an accumulation).
  void BeginBackward(bool sync, int64_t step);
  // Call after backward: waits for every bucket and stores the average in
  // each parameter's grad. FailedPrecondition naming the parameters that got
  // no gradient; the communicator's errors on a failed collective.
  absl::Status FinishBackward();

  int num_buckets() const { return static_cast<int>(buckets_.size()); }
  const GradSyncStats& last_stats() const { return stats_; }

 private:
  struct Bucket {
    std::vector<int> params;       // indices into params_
    std::vector<int64_t> offsets;  // element offset of each in `flat`
    torch::Tensor flat;
    int ready = 0;
    std::unique_ptr<PendingCollective> pending;
  };

  GradSync(Communicator& comm, const GradSyncOptions& options)
      : comm_(comm), options_(options) {}
  void OnGradReady(int param);
  void Launch(int bucket);

  Communicator& comm_;
  GradSyncOptions options_;
  std::vector<std::pair<std::string, torch::Tensor>> params_;
  std::vector<int> bucket_of_;  // param index -> bucket
  std::vector<bool> ready_;
  std::vector<Bucket> buckets_;
  std::vector<std::shared_ptr<torch::autograd::Node>> accumulators_;
  bool sync_ = false;
  int64_t step_ = 0;
  int ready_total_ = 0;
  bool first_launched_ = false;
  GradSyncStats stats_;
};

}  // namespace distill::trainer

#endif  // DISTILL_TRAINER_DIST_GRAD_SYNC_H_
