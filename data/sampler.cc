#include "data/sampler.h"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <numeric>
#include <vector>

#include "absl/strings/str_cat.h"

namespace distill::data {
namespace {

// Invalid options are a programming error in the caller (the config layer
// validates user input), and the constructor cannot return a Status.
void CheckOptions(int64_t dataset_size, const SamplerOptions& options) {
  if (dataset_size >= 0 && options.world_size >= 1 && options.rank >= 0 &&
      options.rank < options.world_size) {
    return;
  }
  std::fprintf(stderr,
               "distill::data::Sampler: invalid options: dataset_size=%lld "
               "rank=%lld world_size=%lld\n",
               static_cast<long long>(dataset_size),
               static_cast<long long>(options.rank),
               static_cast<long long>(options.world_size));
  std::abort();
}

}  // namespace

Sampler::Sampler(int64_t dataset_size, const SamplerOptions& options)
    : dataset_size_(dataset_size), options_(options) {
  CheckOptions(dataset_size, options);
  const int64_t world = options_.world_size;
  // As DistributedSampler: floor when dropping the tail, ceil when padding.
  shard_size_ = options_.drop_last ? dataset_size_ / world
                                   : (dataset_size_ + world - 1) / world;
  SetEpoch(0);
}

void Sampler::SetEpoch(int64_t epoch) {
  epoch_ = epoch;
  cursor_ = 0;
  const int64_t n = dataset_size_;
  const int64_t world = options_.world_size;
  const int64_t total = shard_size_ * world;

  std::vector<int64_t> indices(n);
  if (options_.shuffle) {
    // Python: g = torch.Generator(); g.manual_seed(seed + epoch);
    //         torch.randperm(n, generator=g)
    // manual_seed takes the sum modulo 2^64 as well.
    at::Generator gen = at::detail::createCPUGenerator(
        options_.seed + static_cast<uint64_t>(epoch));
    const torch::Tensor perm = torch::randperm(n, gen, torch::kLong);
    const int64_t* data = perm.data_ptr<int64_t>();
    std::copy(data, data + n, indices.begin());
  } else {
    std::iota(indices.begin(), indices.end(), int64_t{0});
  }

  if (total <= n) {
    indices.resize(total);
  } else {
    // Python: indices += (indices * ceil(padding / len(indices)))[:padding],
    // i.e. wrap around from the start, as often as needed.
    const int64_t padding = total - n;
    for (int64_t i = 0; i < padding; ++i) indices.push_back(indices[i % n]);
  }

  shard_.clear();
  shard_.reserve(shard_size_);
  for (int64_t i = options_.rank; i < total; i += world) {
    shard_.push_back(indices[i]);
  }
}

std::vector<int64_t> Sampler::Remaining() const {
  return std::vector<int64_t>(shard_.begin() + cursor_, shard_.end());
}

void Sampler::Advance(int64_t n) {
  if (n <= 0) return;
  // Compared as a difference so a huge `n` cannot overflow.
  cursor_ = n >= shard_size_ - cursor_ ? shard_size_ : cursor_ + n;
}

absl::Status Sampler::SetCursor(int64_t cursor) {
  if (cursor < 0 || cursor > shard_size_) {
    return absl::InvalidArgumentError(
        absl::StrCat("sampler cursor ", cursor, " is outside [0, ", shard_size_,
                     "] for epoch ", epoch_, " of rank ", options_.rank));
  }
  cursor_ = cursor;
  return absl::OkStatus();
}

}  // namespace distill::data
