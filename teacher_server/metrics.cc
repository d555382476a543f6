#include "teacher_server/metrics.h"

#include <exception>
#include <vector>

#include "absl/strings/str_cat.h"
#include "prometheus/text_serializer.h"

namespace distill::teacher {
namespace {

// 1, 2, 4, ... up to and including max_batch.
prometheus::Histogram::BucketBoundaries BatchBuckets(int max_batch) {
  prometheus::Histogram::BucketBoundaries b;
  for (int64_t s = 1; s < max_batch; s *= 2)
    b.push_back(static_cast<double>(s));
  b.push_back(max_batch);
  return b;
}

// 50 us to ~3 s in factors of ~2.
prometheus::Histogram::BucketBoundaries SecondsBuckets() {
  prometheus::Histogram::BucketBoundaries b;
  for (double s = 50e-6; s < 4.0; s *= 2) b.push_back(s);
  return b;
}

}  // namespace

ServerMetrics::ServerMetrics(int max_batch)
    : registry_(std::make_shared<prometheus::Registry>()),
      calls_(prometheus::BuildCounter()
                 .Name("distill_teacher_calls_total")
                 .Help("Finished calls by RPC and gRPC status code")
                 .Register(*registry_)),
      answer_rows_(prometheus::BuildCounter()
                       .Name("distill_teacher_answered_tokens_total")
                       .Help("Rows answered by encoding: token positions for "
                             "language models, samples otherwise")
                       .Register(*registry_)),
      answer_bytes_(prometheus::BuildCounter()
                        .Name("distill_teacher_answer_bytes_total")
                        .Help("Answer bytes on the wire by encoding, every "
                              "chunk's message included")
                        .Register(*registry_)),
      received_(prometheus::BuildCounter()
                    .Name("distill_teacher_received_batches_total")
                    .Help("Input batches accepted and queued")
                    .Register(*registry_)
                    .Add({})),
      samples_(prometheus::BuildCounter()
                   .Name("distill_teacher_samples_total")
                   .Help("Samples answered with soft targets")
                   .Register(*registry_)
                   .Add({})),
      batches_(prometheus::BuildCounter()
                   .Name("distill_teacher_batches_total")
                   .Help("Input batches answered")
                   .Register(*registry_)
                   .Add({})),
      forwards_(prometheus::BuildCounter()
                    .Name("distill_teacher_forwards_total")
                    .Help("Model forwards run (one per dynamic batch)")
                    .Register(*registry_)
                    .Add({})),
      batch_size_(prometheus::BuildHistogram()
                      .Name("distill_teacher_forward_batch_size")
                      .Help("Samples per model forward, across streams")
                      .Register(*registry_)
                      .Add({}, BatchBuckets(max_batch))),
      queue_delay_(prometheus::BuildHistogram()
                       .Name("distill_teacher_queue_delay_seconds")
                       .Help("Time a batch waits before its forward starts")
                       .Register(*registry_)
                       .Add({}, SecondsBuckets())),
      latency_(prometheus::BuildHistogram()
                   .Name("distill_teacher_latency_seconds")
                   .Help("Time from a batch's arrival to its encoded answer")
                   .Register(*registry_)
                   .Add({}, SecondsBuckets())) {}

absl::Status ServerMetrics::Serve(const std::string& host, int port) {
  try {
    exposer_ = std::make_unique<prometheus::Exposer>(
        absl::StrCat(host, ":", port), /*num_threads=*/1);
  } catch (const std::exception& e) {
    return absl::UnavailableError(absl::StrCat("cannot serve metrics on ", host,
                                               ":", port, ": ", e.what()));
  }
  exposer_->RegisterCollectable(registry_);
  return absl::OkStatus();
}

void ServerMetrics::CountCall(absl::string_view rpc, absl::string_view code) {
  calls_.Add({{"rpc", std::string(rpc)}, {"code", std::string(code)}})
      .Increment();
}

void ServerMetrics::CountReceived() { received_.Increment(); }

void ServerMetrics::CountAnswer(absl::string_view encoding, int64_t rows,
                                int64_t bytes) {
  const prometheus::Labels labels = {{"encoding", std::string(encoding)}};
  answer_rows_.Add(labels).Increment(static_cast<double>(rows));
  answer_bytes_.Add(labels).Increment(static_cast<double>(bytes));
}

void ServerMetrics::ObserveForward(int samples, int requests) {
  forwards_.Increment();
  samples_.Increment(samples);
  batches_.Increment(requests);
  batch_size_.Observe(samples);
}

void ServerMetrics::ObserveQueueDelay(absl::Duration delay) {
  queue_delay_.Observe(absl::ToDoubleSeconds(delay));
}

void ServerMetrics::ObserveLatency(absl::Duration latency) {
  latency_.Observe(absl::ToDoubleSeconds(latency));
}

std::string ServerMetrics::Text() const {
  return prometheus::TextSerializer().Serialize(registry_->Collect());
}

}  // namespace distill::teacher
