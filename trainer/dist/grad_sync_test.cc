// GradSync between two real Gloo ranks, run as two threads of this process
// (c10d process groups do not care whether their peers are threads or
// processes); multi-process runs are in tests/ddp_test.cc.
#include "trainer/dist/grad_sync.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <thread>

#include "common/testing/process.h"
#include "common/testing/status_matchers.h"

namespace distill::trainer {
namespace {

using ::distill::testing::FreePort;
using ::distill::testing::IsOk;
using ::distill::testing::StatusIs;
using ::testing::HasSubstr;

// Three linear layers: enough parameters for several small buckets.
torch::nn::Sequential MakeNet() {
  torch::manual_seed(11);
  return torch::nn::Sequential(torch::nn::Linear(20, 64), torch::nn::ReLU(),
                               torch::nn::Linear(64, 64), torch::nn::ReLU(),
                               torch::nn::Linear(64, 5));
}

std::vector<std::pair<std::string, torch::Tensor>> Named(
    torch::nn::Sequential& net) {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (auto& p : net->named_parameters()) out.emplace_back(p.key(), p.value());
  return out;
}

torch::Tensor Input(int rank) {
  return torch::randn({8, 20}, torch::TensorOptions().dtype(torch::kFloat))
      .add(rank);
}

// Runs `body(rank, comm)` on two ranks in two threads.
template <typename Body>
void OnTwoRanks(Body body) {
  const int port = FreePort();
  auto run = [&](int rank) {
    WorldInfo world;
    world.rank = rank;
    world.world_size = 2;
    world.master_port = port;
    CommunicatorOptions options;
    options.timeout = std::chrono::seconds(30);
    auto comm = CreateCommunicator(world, options);
    ASSERT_THAT(comm, IsOk());
    body(rank, **comm);
  };
  std::thread other(run, 1);
  run(0);
  other.join();
}

struct RankResult {
  std::vector<torch::Tensor> grads;
  GradSyncStats stats;
  int buckets = 0;
  absl::Status status;
};

std::vector<RankResult> SyncedGrads(bool overlap) {
  std::vector<RankResult> results(2);
  // The global RNG is shared by the rank threads: draw everything first.
  std::vector<torch::nn::Sequential> nets = {MakeNet(), MakeNet()};
  std::vector<torch::Tensor> inputs;
  for (int rank = 0; rank < 2; ++rank) {
    torch::manual_seed(100 + rank);
    inputs.push_back(Input(rank));
  }
  OnTwoRanks([&](int rank, Communicator& comm) {
    auto& net = nets[rank];
    GradSyncOptions options;
    options.first_bucket_bytes = 1024;
    options.bucket_cap_bytes = 8 * 1024;
    options.overlap = overlap;
    auto sync = GradSync::Create(comm, Named(net), options);
    ASSERT_THAT(sync, IsOk());
    torch::Tensor x = inputs[rank];
    (*sync)->BeginBackward(true, 0);
    net->forward(x).pow(2).mean().backward();
    results[rank].status = (*sync)->FinishBackward();
    results[rank].stats = (*sync)->last_stats();
    results[rank].buckets = (*sync)->num_buckets();
    for (auto& p : net->parameters())
      results[rank].grads.push_back(p.grad().clone());
  });
  return results;
}

// The average of the two ranks' gradients, computed without any sync.
std::vector<torch::Tensor> ExpectedGrads() {
  std::vector<torch::Tensor> sum;
  for (int rank = 0; rank < 2; ++rank) {
    auto net = MakeNet();
    torch::manual_seed(100 + rank);
    net->forward(Input(rank)).pow(2).mean().backward();
    auto params = net->parameters();
    for (size_t i = 0; i < params.size(); ++i) {
      if (rank == 0) {
        sum.push_back(params[i].grad().clone());
      } else {
        sum[i] = (sum[i] + params[i].grad()) / 2;
      }
    }
  }
  return sum;
}

TEST(GradSyncTest, BucketsAreAllReducedDuringBackwardAndAveraged) {
  auto results = SyncedGrads(/*overlap=*/true);
  auto expected = ExpectedGrads();
  for (int rank = 0; rank < 2; ++rank) {
    ASSERT_THAT(results[rank].status, IsOk());
    ASSERT_EQ(results[rank].grads.size(), expected.size());
    for (size_t i = 0; i < expected.size(); ++i) {
      EXPECT_TRUE(
          torch::allclose(results[rank].grads[i], expected[i], 1e-6, 1e-7))
          << "rank " << rank << " parameter " << i;
    }
    // 1 KiB first bucket, 8 KiB others over ~22 KiB of parameters.
    EXPECT_GE(results[rank].buckets, 3);
    // Every bucket started from a hook, and the first one while gradients of
    // other parameters were still to come: communication overlapped backward.
    EXPECT_EQ(results[rank].stats.launched_in_backward, results[rank].buckets);
    EXPECT_GT(results[rank].stats.params_pending_at_first_launch, 0);
  }
}

TEST(GradSyncTest, WithoutOverlapTheResultIsTheSame) {
  auto results = SyncedGrads(/*overlap=*/false);
  auto expected = ExpectedGrads();
  for (int rank = 0; rank < 2; ++rank) {
    ASSERT_THAT(results[rank].status, IsOk());
    EXPECT_EQ(results[rank].stats.launched_in_backward, 0);
    for (size_t i = 0; i < expected.size(); ++i) {
      EXPECT_TRUE(
          torch::allclose(results[rank].grads[i], expected[i], 1e-6, 1e-7));
    }
  }
}

TEST(GradSyncTest, ParameterWithoutGradientIsNamed) {
  std::vector<absl::Status> status(2);
  std::vector<torch::nn::Sequential> nets = {MakeNet(), MakeNet()};
  std::vector<torch::nn::Linear> extra = {torch::nn::Linear(3, 3),
                                          torch::nn::Linear(3, 3)};
  std::vector<torch::Tensor> inputs = {Input(0), Input(1)};
  OnTwoRanks([&](int rank, Communicator& comm) {
    auto& net = nets[rank];
    auto& unused = extra[rank];
    auto named = Named(net);
    for (auto& p : unused->named_parameters()) {
      named.emplace_back("unused." + p.key(), p.value());
    }
    auto sync = GradSync::Create(comm, named, GradSyncOptions{});
    ASSERT_THAT(sync, IsOk());
    (*sync)->BeginBackward(true, 4);
    net->forward(inputs[rank]).sum().backward();
    status[rank] = (*sync)->FinishBackward();
  });
  for (int rank = 0; rank < 2; ++rank) {
    EXPECT_THAT(
        status[rank],
        StatusIs(absl::StatusCode::kFailedPrecondition,
                 HasSubstr("parameter(s) unused.weight, unused.bias got "
                           "no gradient at step 5")));
  }
}

TEST(GradSyncTest, BroadcastCopiesRankZerosValues) {
  std::vector<torch::Tensor> after(2);
  OnTwoRanks([&](int rank, Communicator& comm) {
    torch::Tensor t = torch::full({3}, static_cast<float>(rank + 5));
    auto sync = GradSync::Create(comm, {}, GradSyncOptions{});
    ASSERT_THAT(sync, IsOk());
    ASSERT_THAT((*sync)->BroadcastFromRankZero({{"t", t}}, "test broadcast"),
                IsOk());
    after[rank] = t;
  });
  EXPECT_TRUE(torch::equal(after[1], torch::full({3}, 5.0f)));
  EXPECT_TRUE(torch::equal(after[0], torch::full({3}, 5.0f)));
}

TEST(GradSyncTest, NcclIsAClearErrorWithoutCuda) {
  WorldInfo world;
  CommunicatorOptions options;
  options.backend = "nccl";
  auto comm = CreateCommunicator(world, options);
  if (NcclCompiledIn()) {
    if (torch::cuda::is_available()) GTEST_SKIP() << "a GPU is present";
    EXPECT_THAT(comm,
                StatusIs(absl::StatusCode::kFailedPrecondition,
                         HasSubstr("needs a CUDA GPU and none is visible")));
  } else {
    EXPECT_THAT(comm,
                StatusIs(absl::StatusCode::kUnimplemented,
                         HasSubstr("backend 'nccl' is not in this build")));
  }
  options.backend = "mpi";
  EXPECT_THAT(CreateCommunicator(world, options),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("unknown communication backend 'mpi'")));
}

}  // namespace
}  // namespace distill::trainer
