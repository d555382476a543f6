#include "data/loader.h"

#include <ATen/Parallel.h>
#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <optional>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/types/span.h"
#include "common/torch_status.h"

namespace distill::data {
namespace {

// The loader's own ops (padding a batch for the random crop, stacking the
// samples) are big enough for LibTorch to split over its intra-op threads,
// which starts a second OpenMP team beside the training step's: on 2 cores
// with 2 intra-op threads that made a hard-label epoch with augmentation
// 1.3-1.6x the same epoch in a one-thread-of-Python loop (which builds
// batches inline), against 1.12x without augmentation. The loader has a
// whole step's time to build the next batch, so it uses one thread.
void UseOneIntraOpThread() {
  at::get_num_threads();   // LibTorch first sets up this thread's count...
  omp_set_num_threads(1);  // ...then it is lowered for this thread only.
}

}  // namespace

Loader::Loader(const Dataset& dataset, std::vector<int64_t> ids,
               const LoaderOptions& options)
    : dataset_(dataset), ids_(std::move(ids)), options_(options) {
  // Started here, not in the initializer list, so that every member the
  // producer reads is constructed first.
  thread_ = std::thread(&Loader::Produce, this);
}

Loader::~Loader() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
  }
  // The producer's Await condition reads stop_, and absl::Mutex re-evaluates
  // conditions on unlock, so releasing the lock above wakes it.
  thread_.join();
}

absl::StatusOr<std::optional<Batch>> Loader::Next() {
  absl::MutexLock lock(&mu_);
  const auto ready = [this] {
    mu_.AssertHeld();
    return !queue_.empty() || producer_done_;
  };
  mu_.Await(absl::Condition(&ready));
  if (queue_.empty()) return std::optional<Batch>();
  // An error stays at the head of the queue, so every later call reports it
  // too instead of pretending the epoch ended.
  if (!queue_.front().ok()) return queue_.front().status();
  Batch batch = *std::move(queue_.front());
  queue_.pop_front();
  return std::optional<Batch>(std::move(batch));
}

void Loader::Produce() {
  UseOneIntraOpThread();
  auto finish = [this](std::optional<absl::Status> error) {
    absl::MutexLock lock(&mu_);
    if (error.has_value()) queue_.push_back(*std::move(error));
    producer_done_ = true;
  };
  if (options_.batch_size <= 0 || options_.queue_depth <= 0) {
    finish(absl::InvalidArgumentError(absl::StrCat(
        "loader for ", dataset_.name(), ": batch_size (", options_.batch_size,
        ") and queue_depth (", options_.queue_depth, ") must be > 0")));
    return;
  }
  const int64_t num_ids = static_cast<int64_t>(ids_.size());
  const size_t depth = static_cast<size_t>(options_.queue_depth);
  for (int64_t start = 0; start < num_ids; start += options_.batch_size) {
    const int64_t size = std::min(options_.batch_size, num_ids - start);
    if (size < options_.batch_size && options_.drop_last_batch) break;
    {
      // Wait for room before fetching, so at most queue_depth batches are
      // ever prepared ahead of the consumer.
      absl::MutexLock lock(&mu_);
      const auto room = [this, depth] {
        mu_.AssertHeld();
        return stop_ || queue_.size() < depth;
      };
      mu_.Await(absl::Condition(&room));
      if (stop_) break;
    }

    // A Dataset should return a Status, but one that lets a torch error
    // escape must not take the process down with an uncaught exception.
    absl::StatusOr<Batch> batch =
        TorchCall(absl::StrCat("fetching a batch of ", dataset_.name()), [&] {
          return dataset_.Get(absl::MakeConstSpan(ids_.data() + start, size));
        });
    if (batch.ok() && options_.augment.enabled) {
      absl::Status augmented = TorchCall(
          absl::StrCat("augmenting a batch of ", dataset_.name()), [&] {
            batch->inputs = Augment(batch->inputs, batch->ids, options_.seed,
                                    options_.epoch, options_.augment,
                                    dataset_.background_value());
          });
      if (!augmented.ok()) batch = augmented;
    }
    if (!batch.ok()) {
      finish(batch.status());
      return;
    }
    absl::MutexLock lock(&mu_);
    queue_.push_back(*std::move(batch));
  }
  finish(std::nullopt);
}

}  // namespace distill::data
