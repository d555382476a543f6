// The epoch sampler: a seeded permutation per epoch, split into disjoint
// equal-length shards by rank, with a resumable cursor. It follows
// torch.utils.data.distributed.DistributedSampler exactly (generator seeded
// with seed + epoch, torch.randperm, pad by wrapping or drop the tail, shard
// = indices[rank::world_size]) so Python tools can reproduce the data order.
// Not thread-safe: one owner (the training loop) drives it.
#ifndef DISTILL_DATA_SAMPLER_H_
#define DISTILL_DATA_SAMPLER_H_

#include <cstdint>
#include <vector>

#include "absl/status/status.h"

namespace distill::data {

struct SamplerOptions {
  // Default: 0.
  uint64_t seed = 0;
  // Default: true; false keeps ids in order (evaluation).
  bool shuffle = true;
  // Default: 0 of 1.
  int64_t rank = 0;
  int64_t world_size = 1;
  // When the dataset does not split evenly: true drops the tail so every
  // shard has floor(size / world) ids; false pads by wrapping around to
  // ceil(size / world). Default: false.
  bool drop_last = false;
};

class Sampler {
 public:
  // Starts at epoch 0. Invalid options (dataset_size < 0, world_size < 1,
  // rank outside [0, world_size)) are a programming error and abort.
  Sampler(int64_t dataset_size, const SamplerOptions& options);

  // Starts `epoch`: draws its permutation and sets the cursor to 0.
  void SetEpoch(int64_t epoch);
  int64_t epoch() const { return epoch_; }

  // Ids per rank per epoch (equal on every rank).
  int64_t shard_size() const { return shard_size_; }

  // This rank's ids from the cursor to the end of the shard.
  std::vector<int64_t> Remaining() const;

  // Moves the cursor forward by `n` consumed ids (clamped to the shard end).
  void Advance(int64_t n);
  int64_t cursor() const { return cursor_; }
  // Restores a cursor saved from cursor(); InvalidArgument when out of range.
  absl::Status SetCursor(int64_t cursor);

 private:
  int64_t dataset_size_;
  SamplerOptions options_;
  int64_t shard_size_;
  int64_t epoch_ = -1;
  int64_t cursor_ = 0;
  std::vector<int64_t> shard_;
};

}  // namespace distill::data

#endif  // DISTILL_DATA_SAMPLER_H_
