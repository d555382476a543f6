// The distill.v1.Teacher gRPC service on the callback API: Info answers from
// the served model's description; each Distill stream gets a reactor that
// validates its requests, hands input batches to the shared dynamic batcher
// and writes the answers back in the order the batches arrived. Every call
// is authenticated first when a token is set. A bad request ends only its
// own stream. Thread-safe: gRPC calls the reactors from its own threads, the
// batcher answers from its worker; all shared state is behind mutexes.
#ifndef DISTILL_TEACHER_SERVER_SERVICE_H_
#define DISTILL_TEACHER_SERVER_SERVICE_H_

#include <grpcpp/grpcpp.h>

#include <cstdint>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_set.h"
#include "absl/synchronization/mutex.h"
#include "proto/teacher.grpc.pb.h"
#include "proto/teacher.pb.h"
#include "teacher_server/batcher.h"
#include "teacher_server/metrics.h"
#include "teacher_server/served_model.h"

namespace distill::teacher {

struct ServiceOptions {
  BatcherOptions batcher;
  // Reported in Info; the server's gRPC receive limit. Required (> 0).
  int64_t max_request_bytes = 0;
  // The most class ids per output row a batch may carry (INDEX_LOGP
  // answers); 0: none, and INDEX_LOGP is not offered. Default: 32.
  int64_t max_index_k = 32;
  // Batches one stream may have read but not yet answered; the stream stops
  // reading (and gRPC flow control holds the client) beyond that.
  // Default: 64.
  int max_inflight_per_stream = 64;
  // Distill streams served at once; one more is refused RESOURCE_EXHAUSTED
  // naming the limit. Default: 256.
  int max_streams = 256;
  // Bearer token every call must carry; empty turns authentication off.
  // Default: off.
  std::string token;
};

class TeacherService final : public v1::Teacher::CallbackService {
 public:
  // `model` and `metrics` must outlive the service.
  TeacherService(const ServedModel* model, ServiceOptions options,
                 ServerMetrics* metrics);
  ~TeacherService() override;

  grpc::ServerUnaryReactor* Info(grpc::CallbackServerContext* context,
                                 const v1::InfoRequest* request,
                                 v1::InfoResponse* response) override;
  grpc::ServerBidiReactor<v1::DistillRequest, v1::DistillResponse>* Distill(
      grpc::CallbackServerContext* context) override;
  // One page of the output head (teacher_server/output_head.h).
  grpc::ServerUnaryReactor* OutputHead(grpc::CallbackServerContext* context,
                                       const v1::OutputHeadRequest* request,
                                       v1::OutputHeadPage* response) override;

  // Stops taking work: new streams are refused UNAVAILABLE; every open
  // stream stops reading, answers each batch it has read, then ends
  // UNAVAILABLE "the teacher server is shutting down" (OK when the client
  // had already closed its side). Queued batches run at once (the batcher
  // stops waiting for company); a batch read after this point is refused
  // UNAVAILABLE. Idempotent.
  void Drain();
  // Answers what is queued and stops the batcher thread. Call after the
  // gRPC server has shut down.
  void StopBatcher() { batcher_.Stop(); }

  const v1::InfoResponse& info() const { return info_; }
  BatcherStats stats() const { return batcher_.stats(); }

 private:
  class DistillReactor;

  void Unregister(DistillReactor* stream);
  // Lets streams held back by a full batcher queue read again.
  void WakeStreams();

  const ServiceOptions options_;
  const ServedModel* const model_;
  ServerMetrics* const metrics_;
  v1::InfoResponse info_;
  DynamicBatcher batcher_;

  absl::Mutex mu_;
  absl::flat_hash_set<DistillReactor*> streams_ ABSL_GUARDED_BY(mu_);
  bool draining_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t next_stream_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace distill::teacher

#endif  // DISTILL_TEACHER_SERVER_SERVICE_H_
