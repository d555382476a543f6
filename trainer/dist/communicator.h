// Collectives between the trainer ranks of one job, behind one interface:
// Gloo for CPU tensors (c10d's ProcessGroupGloo over a TCPStore
// rendezvous), NCCL for CUDA tensors where LibTorch was built with CUDA, and
// a local no-op for a single process. Every collective is bounded by the
// configured timeout; a failure names this rank and the operation.
// A Communicator is used from one thread at a time (the training loop and
// the autograd hooks it runs).
#ifndef DISTILL_TRAINER_DIST_COMMUNICATOR_H_
#define DISTILL_TRAINER_DIST_COMMUNICATOR_H_

#include <torch/torch.h>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "trainer/dist/world.h"

namespace distill::trainer {

// A collective in flight.
class PendingCollective {
 public:
  virtual ~PendingCollective() = default;
  // Blocks until done; DeadlineExceeded or Unavailable naming the rank and
  // the operation when it failed or timed out.
  virtual absl::Status Wait() = 0;
};

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int world_size() const = 0;
  virtual std::string backend() const = 0;

  // Starts an in-place sum over all ranks. `what` names the operation in
  // errors ("all-reduce of gradient bucket 2 at step 17").
  virtual std::unique_ptr<PendingCollective> AllReduceSum(torch::Tensor tensor,
                                                          std::string what) = 0;
  // Copies rank `root`'s tensors into every rank's, in place.
  virtual absl::Status Broadcast(std::vector<torch::Tensor> tensors, int root,
                                 const std::string& what) = 0;
  // True on every rank when `local` is true on any rank.
  virtual absl::StatusOr<bool> AnyRank(bool local, const std::string& what) = 0;
};

struct CommunicatorOptions {
  // "gloo" or "nccl". Default: "gloo".
  std::string backend = "gloo";
  // Upper bound on rendezvous and on every collective. Default: 5 minutes.
  std::chrono::milliseconds timeout = std::chrono::minutes(5);
};

// A communicator for `world`: local when world_size is 1, otherwise the
// chosen backend after a TCPStore rendezvous at master_addr:master_port.
// Unimplemented for "nccl" in a build without CUDA, FailedPrecondition for
// "nccl" without a visible GPU, InvalidArgument for an unknown backend,
// DeadlineExceeded when the other ranks do not show up in time.
absl::StatusOr<std::unique_ptr<Communicator>> CreateCommunicator(
    const WorldInfo& world, const CommunicatorOptions& options);

// True when this build can run the NCCL backend (LibTorch with CUDA).
bool NcclCompiledIn();

}  // namespace distill::trainer

#endif  // DISTILL_TRAINER_DIST_COMMUNICATOR_H_
