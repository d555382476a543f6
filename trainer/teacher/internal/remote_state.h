// The state behind RemoteTeacher (remote_teacher.h), shared by the files
// that implement it along its seams: endpoint lifecycle (connect, mark down,
// reconnect, fail over: remote_endpoints.cc), dispatch and streams (submit,
// pick an endpoint, one Distill stream per endpoint and temperature, the
// reader threads: remote_streams.cc), answer checks (remote_answers.cc) and
// stats (remote_stats.cc). Every field marked "guarded by the client's
// mutex" is guarded by RemoteTeacher::Impl::mu_.
#ifndef DISTILL_TRAINER_TEACHER_INTERNAL_REMOTE_STATE_H_
#define DISTILL_TRAINER_TEACHER_INTERNAL_REMOTE_STATE_H_

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <cstdint>
#include <deque>
#include <future>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "proto/teacher.grpc.pb.h"
#include "trainer/teacher/internal/remote_teacher.h"

namespace distill::trainer {
namespace remote {

using Clock = std::chrono::steady_clock;
using Result = absl::StatusOr<losses::TeacherTargets>;
using StreamRW =
    grpc::ClientReaderWriter<v1::DistillRequest, v1::DistillResponse>;

// Reconnect attempts back off from 0.1 s to this.
inline constexpr double kMaxBackoffSeconds = 2.0;

// "UNAVAILABLE: <message>" for a failed call.
std::string Describe(const grpc::Status& status);

// Codes after which the same batch may succeed on another server; the
// others (a refused token, a malformed request) would fail anywhere.
bool Retryable(grpc::StatusCode code);

inline double SecondsBetween(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

// One batch from Submit until its future is set.
struct Pending {
  uint64_t id = 0;
  int64_t rows = 0;
  // Token data: the positions per sample (S); 0 for images.
  int64_t positions = 0;
  double temperature = 0;
  // The class ids the batch asks the teacher's log-probabilities at (int64
  // [rows(, positions), k]); undefined for the stream's own encoding.
  torch::Tensor indices;
  v1::DistillRequest request;
  std::promise<Result> promise;
  Clock::time_point start;
  // When it was last handed to a stream.
  Clock::time_point sent;
  // Times it was handed to a stream; guarded by the client's mutex.
  int attempts = 0;
  // Bytes of `chunks`, bounded by what its rows can take.
  int64_t chunk_bytes = 0;
  // The chunks of its answer read so far on the stream it was sent to;
  // cleared when it is resent. Touched by that stream's reader only.
  std::vector<v1::DistillResponse> chunks;
};

// One Distill call and its two threads. The writer opens the call, sends
// the header and then the queued batches, and at its end joins the reader;
// the reader pairs answers with batches and, when the call ends, hands what
// is left in flight back to Dispatch. Every call that may block (opening,
// a write held up by flow control, Finish) runs on these threads, never
// under the client's mutex, so a stuck stream holds up only itself: the
// supervisor's timeout cancels it.
struct Stream {
  grpc::ClientContext context;
  // Set by the writer before it starts the reader.
  std::unique_ptr<StreamRW> rw;
  double temperature = 0;
  // Guarded by the client's mutex: new batches may be sent here.
  bool accepting = true;
  // Guarded by the client's mutex: batches sent here and not yet answered
  // (written or still queued).
  std::map<uint64_t, std::shared_ptr<Pending>> inflight;
  // Batches for the writer, in order.
  absl::Mutex queue_mu;
  std::deque<std::shared_ptr<Pending>> queue ABSL_GUARDED_BY(queue_mu);
  // Set once the reader saw the end: the writer writes nothing more.
  bool closing ABSL_GUARDED_BY(queue_mu) = false;
  // Orders the writer's Write and the reader's Finish on the call.
  absl::Mutex call_mu;
  bool finished ABSL_GUARDED_BY(call_mu) = false;
  std::thread writer;
  std::thread reader;  // started and joined by the writer
  // Guarded by the client's mutex: the writer has joined the reader and is
  // returning, so joining it does not wait.
  bool threads_exited = false;
};

// A teacher server; all fields guarded by the client's mutex.
struct Endpoint {
  std::string address;
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<v1::Teacher::Stub> stub;
  bool up = false;
  // Its Info did not fit this job: never used.
  bool refused = false;
  std::string last_error = "no answer yet";
  Clock::time_point next_retry;
  double backoff_seconds = 0.1;
  // Failures since it last answered a batch: each doubles its wait before
  // the next reconnect, so a server that fails every batch costs little.
  int failures_in_a_row = 0;
  // Samples sent and not yet answered.
  int64_t outstanding = 0;
  std::vector<std::shared_ptr<Stream>> streams;
};

}  // namespace remote

class RemoteTeacher::Impl {
 public:
  using Clock = remote::Clock;
  using Endpoint = remote::Endpoint;
  using Pending = remote::Pending;
  using Result = remote::Result;
  using Stream = remote::Stream;

  explicit Impl(RemoteTeacherOptions options) : options_(std::move(options)) {}
  ~Impl();

  absl::Status Connect();
  TargetsFuture Submit(const data::Batch& batch, double temperature);
  nlohmann::json TakeStats();
  const v1::InfoResponse& info() const { return info_; }
  int64_t index_top_k() const { return options_.index_top_k; }
  int64_t hidden_size() const {
    return head_ == nullptr ? 0 : head_->weight.size(1);
  }
  std::string description() const;

 private:
  std::shared_ptr<Endpoint> AddEndpoint(const std::string& address)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  grpc::Status CallInfo(Endpoint& endpoint, bool wait_for_ready,
                        v1::InfoResponse* info);
  // The teacher's output head, paged in from `endpoint` and checked against
  // its hash (teacher_server/output_head.h); for HIDDEN_FP16.
  absl::StatusOr<std::shared_ptr<const losses::OutputHead>> FetchOutputHead(
      Endpoint& endpoint);
  // gRPC's receive limit for this client's channels: no message may be
  // larger than the whole answer to its largest batch, nor than
  // max_answer_bytes, plus framing; int64 max when unknown.
  int64_t ReceiveLimit() const;
  void Authorize(grpc::ClientContext& context) const;
  // Sends `pending` to the least loaded endpoint that is up (queued for its
  // stream's writer), or keeps it in waiting_. Never blocks.
  void Dispatch(std::shared_ptr<Pending> pending)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The endpoint's accepting stream for `temperature`, or a new one (its
  // writer thread opens the call). Never blocks.
  std::shared_ptr<Stream> StreamFor(const std::shared_ptr<Endpoint>& endpoint,
                                    double temperature)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void WriteLoop(std::shared_ptr<Endpoint> endpoint,
                 std::shared_ptr<Stream> stream) ABSL_LOCKS_EXCLUDED(mu_);
  void ReadLoop(std::shared_ptr<Endpoint> endpoint,
                std::shared_ptr<Stream> stream);
  // The most bytes one row (a sample's or a position's distribution) of
  // an answer takes in this client's encoding.
  int64_t AnswerRowBytes() const;
  Result Decode(const Endpoint& endpoint, const Pending& pending,
                const v1::DistillResponse& response) const;
  void MarkDown(Endpoint& endpoint, const std::string& error)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void MarkSilentEndpointsDown(Clock::time_point now)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool AnyInFlight() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Whether an endpoint that is up has a batch out for less than
  // answer_timeout_seconds.
  bool AnyUpEndpointWithinAnswerTimeout(Clock::time_point now) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool AnyUp() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void FailEverything(const absl::Status& status)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Supervise();

  const RemoteTeacherOptions options_;
  v1::InfoResponse info_;
  // HIDDEN_FP16: the head fetched at Connect (set before any batch).
  std::shared_ptr<const losses::OutputHead> head_;

  mutable absl::Mutex mu_;
  absl::CondVar wake_;
  std::vector<std::shared_ptr<Endpoint>> endpoints_ ABSL_GUARDED_BY(mu_);
  // Batches no endpoint could take, in submission order.
  std::deque<std::shared_ptr<Pending>> waiting_ ABSL_GUARDED_BY(mu_);
  // Set once no endpoint is up while work is outstanding; reset when a
  // batch is answered or no work is outstanding, not when a server answers
  // Info, so one that answers Info but no batch does not stop the clock.
  std::optional<Clock::time_point> unanswered_since_ ABSL_GUARDED_BY(mu_);
  absl::Status failed_ ABSL_GUARDED_BY(mu_);
  bool shutting_down_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t next_id_ ABSL_GUARDED_BY(mu_) = 1;
  // Where Dispatch starts looking: endpoints with equal load take turns, so
  // a teacher that answers before the next batch comes (every server idle)
  // does not get all the work.
  size_t next_endpoint_ ABSL_GUARDED_BY(mu_) = 0;

  // Metrics since the last TakeStats.
  std::vector<double> latencies_ms_ ABSL_GUARDED_BY(mu_);
  int64_t samples_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t resent_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t failures_ ABSL_GUARDED_BY(mu_) = 0;
  double topk_mass_sum_ ABSL_GUARDED_BY(mu_) = 0;

  std::thread supervisor_;
};

}  // namespace distill::trainer

#endif  // DISTILL_TRAINER_TEACHER_INTERNAL_REMOTE_STATE_H_
