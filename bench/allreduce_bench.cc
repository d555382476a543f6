// All-reduce bandwidth of the trainer's communicator, as nccl-tests reports
// it: for each message size, the time of one in-place sum, the algorithm
// bandwidth (bytes / time) and the bus bandwidth (algbw * 2(n-1)/n), which
// is comparable across rank counts. Start one process per rank with the
// torchrun variables (bench/ddp_bench.sh does); rank 0 prints the table.
#include <chrono>
#include <cstdio>
#include <cstdlib>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "trainer/dist/communicator.h"
#include "trainer/dist/world.h"

ABSL_FLAG(int64_t, min_bytes, 1 << 10, "Smallest message.");
ABSL_FLAG(int64_t, max_bytes, int64_t{64} << 20, "Largest message.");
ABSL_FLAG(double, seconds_per_size, 0.5, "Time spent measuring each size.");

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  using distill::trainer::CreateCommunicator;
  auto world = distill::trainer::DetectWorld(
      [](const char* name) { return std::getenv(name); });
  if (!world.ok()) {
    std::fprintf(stderr, "allreduce_bench: error: %s\n",
                 std::string(world.status().message()).c_str());
    return 1;
  }
  auto comm = CreateCommunicator(*world, {});
  if (!comm.ok()) {
    std::fprintf(stderr, "allreduce_bench: error: %s\n",
                 std::string(comm.status().message()).c_str());
    return 1;
  }
  const int n = (*comm)->world_size();
  const bool leader = (*comm)->rank() == 0;
  if (leader) {
    std::printf("# all-reduce (sum, float32), backend %s, %d ranks\n",
                (*comm)->backend().c_str(), n);
    std::printf("%12s %8s %12s %14s %14s\n", "bytes", "iters", "time_us",
                "algbw_GB/s", "busbw_GB/s");
  }
  for (int64_t bytes = absl::GetFlag(FLAGS_min_bytes);
       bytes <= absl::GetFlag(FLAGS_max_bytes); bytes *= 4) {
    torch::Tensor t = torch::ones({bytes / 4});
    for (int i = 0; i < 2; ++i) {
      if (auto s = (*comm)->AllReduceSum(t, "warm-up")->Wait(); !s.ok()) {
        std::fprintf(stderr, "allreduce_bench: error: %s\n",
                     std::string(s.message()).c_str());
        return 1;
      }
    }
    // Every rank must run the same number of iterations: rank 0 decides
    // from a probe, and the count travels in a broadcast.
    const auto probe_start = std::chrono::steady_clock::now();
    (*comm)->AllReduceSum(t, "probe")->Wait().IgnoreError();
    const double probe = std::chrono::duration<double>(
                             std::chrono::steady_clock::now() - probe_start)
                             .count();
    torch::Tensor iters_t = torch::full(
        {1}, static_cast<float>(std::clamp(
                 absl::GetFlag(FLAGS_seconds_per_size) / std::max(probe, 1e-6),
                 3.0, 2000.0)));
    if (auto s = (*comm)->Broadcast({iters_t}, 0, "iteration count"); !s.ok()) {
      std::fprintf(stderr, "allreduce_bench: error: %s\n",
                   std::string(s.message()).c_str());
      return 1;
    }
    const int iters = static_cast<int>(iters_t.item<float>());
    const auto start = std::chrono::steady_clock::now();
    for (int i = 0; i < iters; ++i) {
      if (auto s = (*comm)->AllReduceSum(t, "timed all-reduce")->Wait();
          !s.ok()) {
        std::fprintf(stderr, "allreduce_bench: error: %s\n",
                     std::string(s.message()).c_str());
        return 1;
      }
    }
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
            .count() /
        iters;
    const double algbw = bytes / seconds / 1e9;
    const double busbw = algbw * 2.0 * (n - 1) / n;
    if (leader) {
      std::printf("%12lld %8d %12.1f %14.3f %14.3f\n",
                  static_cast<long long>(bytes), iters, seconds * 1e6, algbw,
                  busbw);
      std::fflush(stdout);
    }
  }
  return 0;
}
