// A background loader: one thread assembles batches (fetch, augment) for a
// list of ids and hands them over through a bounded queue, so data
// preparation overlaps the training step. Next() is called by one consumer
// thread; the destructor stops and joins the producer.
#ifndef DISTILL_DATA_LOADER_H_
#define DISTILL_DATA_LOADER_H_

#include <cstdint>
#include <deque>
#include <optional>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "data/augment.h"
#include "data/dataset.h"

namespace distill::data {

struct LoaderOptions {
  // Required, > 0.
  int64_t batch_size = 0;
  // Batches prepared ahead of the consumer. Default: 4.
  int64_t queue_depth = 4;
  // Default: false (the last, smaller batch is kept).
  bool drop_last_batch = false;
  AugmentOptions augment;
  // Seed and epoch for augmentation draws.
  uint64_t seed = 0;
  int64_t epoch = 0;
};

class Loader {
 public:
  // `dataset` must outlive the loader. `ids` are consumed in order.
  Loader(const Dataset& dataset, std::vector<int64_t> ids,
         const LoaderOptions& options);
  ~Loader();
  Loader(const Loader&) = delete;
  Loader& operator=(const Loader&) = delete;

  // The next batch; std::nullopt after the last one; a Status when fetching
  // failed (the loader then stops).
  absl::StatusOr<std::optional<Batch>> Next();

 private:
  void Produce();

  const Dataset& dataset_;
  const std::vector<int64_t> ids_;
  const LoaderOptions options_;

  absl::Mutex mu_;
  std::deque<absl::StatusOr<Batch>> queue_ ABSL_GUARDED_BY(mu_);
  bool producer_done_ ABSL_GUARDED_BY(mu_) = false;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace distill::data

#endif  // DISTILL_DATA_LOADER_H_
