#include "trainer/dist/communicator.h"

#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#ifdef DISTILL_WITH_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include <cstdlib>

#include "absl/strings/str_cat.h"
#include "common/torch_status.h"

namespace distill::trainer {
namespace {

class DonePending final : public PendingCollective {
 public:
  absl::Status Wait() override { return absl::OkStatus(); }
};

// One process: every collective is the identity.
class LocalCommunicator final : public Communicator {
 public:
  int rank() const override { return 0; }
  int world_size() const override { return 1; }
  std::string backend() const override { return "local"; }
  std::unique_ptr<PendingCollective> AllReduceSum(torch::Tensor,
                                                  std::string) override {
    return std::make_unique<DonePending>();
  }
  absl::Status Broadcast(std::vector<torch::Tensor>, int,
                         const std::string&) override {
    return absl::OkStatus();
  }
  absl::StatusOr<bool> AnyRank(bool local, const std::string&) override {
    return local;
  }
};

// Turns a failed or timed-out c10d collective into a Status that names the
// rank and the operation. Gloo reports a dead peer as a closed connection
// and a silent one as a timeout.
absl::Status CollectiveError(int rank, const std::string& what,
                             const std::string& detail) {
  const bool timeout = detail.find("imeout") != std::string::npos ||
                       detail.find("imed out") != std::string::npos;
  const std::string message =
      absl::StrCat("rank ", rank, ": ", what, " failed: ",
                   timeout ? "timed out waiting for the other ranks"
                           : "another rank is gone",
                   " (", detail, ")");
  return timeout ? absl::DeadlineExceededError(message)
                 : absl::UnavailableError(message);
}

class C10dPending final : public PendingCollective {
 public:
  C10dPending(c10::intrusive_ptr<c10d::Work> work, int rank, std::string what,
              std::chrono::milliseconds timeout)
      : work_(std::move(work)),
        rank_(rank),
        what_(std::move(what)),
        timeout_(timeout) {}
  absl::Status Wait() override {
    try {
      work_->wait(timeout_);
      return absl::OkStatus();
    } catch (const c10::Error& e) {
      return CollectiveError(rank_, what_, e.what_without_backtrace());
    } catch (const std::exception& e) {
      return CollectiveError(rank_, what_, e.what());
    }
  }

 private:
  c10::intrusive_ptr<c10d::Work> work_;
  int rank_;
  std::string what_;
  std::chrono::milliseconds timeout_;
};

class FailedPending final : public PendingCollective {
 public:
  explicit FailedPending(absl::Status status) : status_(std::move(status)) {}
  absl::Status Wait() override { return status_; }

 private:
  absl::Status status_;
};

class C10dCommunicator final : public Communicator {
 public:
  C10dCommunicator(c10::intrusive_ptr<c10d::ProcessGroup> group,
                   c10::intrusive_ptr<c10d::Store> store, std::string backend,
                   std::chrono::milliseconds timeout)
      : group_(std::move(group)),
        store_(std::move(store)),
        backend_(std::move(backend)),
        timeout_(timeout) {}

  int rank() const override { return group_->getRank(); }
  int world_size() const override { return group_->getSize(); }
  std::string backend() const override { return backend_; }

  std::unique_ptr<PendingCollective> AllReduceSum(torch::Tensor tensor,
                                                  std::string what) override {
    try {
      std::vector<torch::Tensor> tensors{std::move(tensor)};
      return std::make_unique<C10dPending>(group_->allreduce(tensors), rank(),
                                           std::move(what), timeout_);
    } catch (const c10::Error& e) {
      return std::make_unique<FailedPending>(
          CollectiveError(rank(), what, e.what_without_backtrace()));
    }
  }

  absl::Status Broadcast(std::vector<torch::Tensor> tensors, int root,
                         const std::string& what) override {
    try {
      c10d::BroadcastOptions options;
      options.rootRank = root;
      return C10dPending(group_->broadcast(tensors, options), rank(), what,
                         timeout_)
          .Wait();
    } catch (const c10::Error& e) {
      return CollectiveError(rank(), what, e.what_without_backtrace());
    }
  }

  absl::StatusOr<bool> AnyRank(bool local, const std::string& what) override {
    torch::Tensor flag = torch::full({1}, local ? 1.0f : 0.0f);
    absl::Status s = AllReduceSum(flag, what)->Wait();
    if (!s.ok()) return s;
    return flag.item<float>() > 0;
  }

 private:
  c10::intrusive_ptr<c10d::ProcessGroup> group_;
  c10::intrusive_ptr<c10d::Store> store_;
  std::string backend_;
  std::chrono::milliseconds timeout_;
};

}  // namespace

bool NcclCompiledIn() {
#ifdef DISTILL_WITH_NCCL
  return true;
#else
  return false;
#endif
}

absl::StatusOr<std::unique_ptr<Communicator>> CreateCommunicator(
    const WorldInfo& world, const CommunicatorOptions& options) {
  if (options.backend != "gloo" && options.backend != "nccl") {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown communication backend '", options.backend,
                     "'; known: gloo (CPU), nccl (CUDA)"));
  }
  if (options.backend == "nccl") {
    if (!NcclCompiledIn()) {
      return absl::UnimplementedError(
          "backend 'nccl' is not in this build: its LibTorch has no CUDA; "
          "use backend 'gloo' on CPUs");
    }
    if (!torch::cuda::is_available()) {
      return absl::FailedPreconditionError(
          "backend 'nccl' needs a CUDA GPU and none is visible; use backend "
          "'gloo' on CPUs");
    }
  }
  if (world.world_size == 1) return std::make_unique<LocalCommunicator>();

  const std::string where =
      absl::StrCat(world.master_addr, ":", world.master_port);
  return TorchCall(
      absl::StrCat("rank ", world.rank, ": rendezvous with ", world.world_size,
                   " ranks at ", where),
      [&]() -> std::unique_ptr<Communicator> {
        c10d::TCPStoreOptions store_options;
        store_options.port = static_cast<uint16_t>(world.master_port);
        store_options.isServer = world.rank == 0 && !world.use_agent_store;
        store_options.numWorkers = world.world_size;
        store_options.waitWorkers = !world.use_agent_store;
        store_options.timeout = options.timeout;
        c10::intrusive_ptr<c10d::Store> store =
            c10::make_intrusive<c10d::TCPStore>(world.master_addr,
                                                store_options);
        if (world.use_agent_store) {
          store = c10::make_intrusive<c10d::PrefixStore>(
              absl::StrCat("/worker/attempt_", world.restart_count), store);
        }
        c10::intrusive_ptr<c10d::ProcessGroup> group;
#ifdef DISTILL_WITH_NCCL
        if (options.backend == "nccl") {
          auto nccl_options = c10d::ProcessGroupNCCL::Options::create();
          nccl_options->timeout = options.timeout;
          group = c10::make_intrusive<c10d::ProcessGroupNCCL>(
              store, world.rank, world.world_size, nccl_options);
        }
#endif
        if (!group) {
          auto gloo_options =
              c10d::ProcessGroupGloo::Options::create(options.timeout);
          // Like PyTorch: GLOO_SOCKET_IFNAME picks the interface; a
          // loopback rendezvous stays on loopback; otherwise the address
          // this host's name resolves to.
          const char* ifname = std::getenv("GLOO_SOCKET_IFNAME");
          const bool loopback = world.master_addr == "localhost" ||
                                world.master_addr.rfind("127.", 0) == 0;
          gloo_options->devices.push_back(
              ifname != nullptr
                  ? c10d::ProcessGroupGloo::createDeviceForInterface(ifname)
              : loopback
                  ? c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1")
                  : c10d::ProcessGroupGloo::createDefaultDevice());
          gloo_options->threads = 2;
          group = c10::make_intrusive<c10d::ProcessGroupGloo>(
              store, world.rank, world.world_size, gloo_options);
        }
        return std::make_unique<C10dCommunicator>(group, store, options.backend,
                                                  options.timeout);
      });
}

}  // namespace distill::trainer
