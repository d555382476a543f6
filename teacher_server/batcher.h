// Dynamic batching across streams. Streams submit validated input batches;
// one worker thread gathers what is queued, up to `max_batch` samples (and
// for a language model `max_batch_tokens` token positions) or until the
// oldest batch has waited `max_queue_delay`, runs ONE forward of
// the teacher on the concatenation (in inference mode), splits the logits
// back, applies softmax(z / T) at each batch's own temperature, encodes each
// answer and hands it to the batch's callback. Each stream's batches run in
// its order, and streams take turns (round robin), so one stream's backlog
// delays another's next batch by at most one batch per stream. Batches of
// a cancelled stream are dropped unrun. Submit and stats are thread-safe;
// the model runs on the worker thread only.
#ifndef DISTILL_TEACHER_SERVER_BATCHER_H_
#define DISTILL_TEACHER_SERVER_BATCHER_H_

#include <torch/torch.h>

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "proto/teacher.pb.h"
#include "teacher_server/metrics.h"
#include "teacher_server/served_model.h"

namespace distill::teacher {

struct BatcherOptions {
  // Most samples per forward. Default: 512.
  int max_batch = 512;
  // Language models (a served model with a context length S): most token
  // positions per forward, samples x S. The forward's logits are positions
  // x V floats, so this bounds the server's memory where a sample count
  // cannot (512 windows of 128 tokens at V = 32,000 would be 8 GiB). A
  // batch over the budget on its own still runs, alone. 0: no limit.
  // Default: 16,384 (2 GiB of logits at V = 32,000).
  int64_t max_batch_tokens = 16384;
  // How long the oldest queued batch may wait for company. Zero runs
  // whatever is queued at once. Default: 2 ms.
  absl::Duration max_queue_delay = absl::Microseconds(2000);
  // Samples queued across streams above which HasRoom() is false: streams
  // then stop reading (gRPC flow control holds their clients) until the
  // worker catches up. Default: 8 * 512.
  int64_t max_queued_samples = 8 * 512;
};

// Who submitted a batch: the stream (batches of one stream keep their
// order; streams take turns) and its cancellation flag, set once nobody
// will read the answer.
struct BatchOrigin {
  uint64_t stream = 0;
  std::shared_ptr<const std::atomic<bool>> cancelled;
};

// Counts since the batcher started, for tests and logs.
struct BatcherStats {
  int64_t forwards = 0;
  int64_t batches = 0;
  int64_t samples = 0;
  // The most batches (requests) one forward has combined.
  int64_t max_batches_per_forward = 0;
  // Batches of cancelled streams dropped before their forward.
  int64_t dropped = 0;
};

class DynamicBatcher {
 public:
  using Done = std::function<void(absl::StatusOr<v1::SoftTargets>)>;

  // `model` and `metrics` must outlive the batcher; `metrics` may be null.
  DynamicBatcher(const ServedModel* model, BatcherOptions options,
                 ServerMetrics* metrics);
  // Stop()s.
  ~DynamicBatcher();

  // Queues `inputs` ([n, input_shape...], 1 <= n <= max_batch, validated by
  // the caller) to be answered with `header`'s temperature and encoding.
  // `done` runs once, on the worker thread, with the encoded targets, the
  // error of the forward, or Cancelled when `origin` was cancelled before
  // the batch's turn. After Stop, `done` runs at once with Unavailable.
  // With `indices` (int64 [n, ..., k], validated by the caller) the answer
  // is INDEX_LOGP at them instead of the header's encoding.
  void Submit(torch::Tensor inputs, const v1::StreamHeader& header,
              BatchOrigin origin, Done done,
              torch::Tensor indices = torch::Tensor());

  // Whether fewer than max_queued_samples samples wait for a forward.
  bool HasRoom() const;

  // Runs (on the worker thread, no lock held) each time queued batches are
  // taken for a forward, so streams held back by HasRoom() may read again.
  // Set before the first Submit.
  void set_on_room(std::function<void()> on_room) {
    on_room_ = std::move(on_room);
  }

  // Answers everything queued, then joins the worker. Idempotent.
  void Stop();

  BatcherStats stats() const;

 private:
  struct Item {
    torch::Tensor inputs;
    torch::Tensor indices;
    v1::StreamHeader header;
    BatchOrigin origin;
    Done done;
    absl::Time enqueued;
  };

  void Run();
  // Takes up to max_batch samples (max_batch_tokens positions) from the
  // streams in turn; batches of cancelled streams go to `dropped` instead.
  std::vector<Item> Gather(std::vector<Item>& dropped)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // When the oldest queued batch was queued.
  absl::Time OldestEnqueued() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Runs one forward over `items` and answers each.
  void Process(std::vector<Item>& items);
  // Whether `samples` samples are more than one forward takes (so a queue
  // of q is full when q + 1 exceed it).
  bool Exceeds(int64_t samples) const;

  const ServedModel* const model_;
  const BatcherOptions options_;
  // Token positions per sample: S for a language model, else 1.
  const int64_t positions_;
  ServerMetrics* const metrics_;

  mutable absl::Mutex mu_;
  // Each stream's queued batches, and the streams with any, in turn order.
  std::map<uint64_t, std::deque<Item>> queues_ ABSL_GUARDED_BY(mu_);
  std::deque<uint64_t> turns_ ABSL_GUARDED_BY(mu_);
  std::function<void()> on_room_;
  int64_t queued_samples_ ABSL_GUARDED_BY(mu_) = 0;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  BatcherStats stats_ ABSL_GUARDED_BY(mu_);
  std::thread worker_;
};

// softmax(logits / T) of one batch's logits, encoded as `header` asks.
absl::StatusOr<v1::SoftTargets> EncodeLogits(const torch::Tensor& logits,
                                             const v1::StreamHeader& header);

}  // namespace distill::teacher

#endif  // DISTILL_TEACHER_SERVER_BATCHER_H_
