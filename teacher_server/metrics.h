// Prometheus metrics of a teacher server: requests by RPC and outcome,
// samples, tokens and bytes answered per encoding, the batch size of every
// model forward, how long batches wait in the queue and how long a batch takes
// from arrival to answer. The metrics always exist (tests read them as text);
// they are served over HTTP only when Serve is called. Thread-safe:
// prometheus-cpp metrics are atomic.
#ifndef DISTILL_TEACHER_SERVER_METRICS_H_
#define DISTILL_TEACHER_SERVER_METRICS_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "prometheus/counter.h"
#include "prometheus/exposer.h"
#include "prometheus/family.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"

namespace distill::teacher {

class ServerMetrics {
 public:
  // `max_batch` sets the batch-size histogram's top bucket.
  explicit ServerMetrics(int max_batch);

  // Serves http://<host>:<port>/metrics until destruction. Unavailable when
  // the address cannot be bound.
  absl::Status Serve(const std::string& host, int port);

  // One finished call: `rpc` is "Info" or "Distill", `code` the gRPC status
  // code name ("OK", "INVALID_ARGUMENT", ...).
  void CountCall(absl::string_view rpc, absl::string_view code);
  // One input batch accepted by a stream (validated and queued).
  void CountReceived();
  // One model forward over `samples` samples from `requests` batches.
  void ObserveForward(int samples, int requests);
  // One batch's wait between arrival and the forward that ran it.
  void ObserveQueueDelay(absl::Duration delay);
  // One batch's time from arrival to its encoded answer.
  void ObserveLatency(absl::Duration latency);
  // One answer sent in `encoding` ("DENSE_FP16", ...): its rows (positions
  // of a language model's windows, or samples) and its bytes on the wire,
  // every chunk's message included.
  void CountAnswer(absl::string_view encoding, int64_t rows, int64_t bytes);

  // The Prometheus text exposition of every metric.
  std::string Text() const;

 private:
  std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Family<prometheus::Counter>& calls_;
  prometheus::Family<prometheus::Counter>& answer_rows_;
  prometheus::Family<prometheus::Counter>& answer_bytes_;
  prometheus::Counter& received_;
  prometheus::Counter& samples_;
  prometheus::Counter& batches_;
  prometheus::Counter& forwards_;
  prometheus::Histogram& batch_size_;
  prometheus::Histogram& queue_delay_;
  prometheus::Histogram& latency_;
  std::unique_ptr<prometheus::Exposer> exposer_;
};

}  // namespace distill::teacher

#endif  // DISTILL_TEACHER_SERVER_METRICS_H_
