#include "trainer/remote_teacher.h"

#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <deque>
#include <map>
#include <set>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/status.h"
#include "proto/teacher.grpc.pb.h"
#include "teacher_server/codec.h"

namespace distill::trainer {
namespace {

using Clock = std::chrono::steady_clock;
using Result = absl::StatusOr<losses::TeacherTargets>;
using StreamRW =
    grpc::ClientReaderWriter<v1::DistillRequest, v1::DistillResponse>;

// Reconnect attempts back off from 0.1 s to this.
constexpr double kMaxBackoffSeconds = 2.0;

std::string Describe(const grpc::Status& status) {
  return absl::StrCat(
      absl::StatusCodeToString(static_cast<absl::StatusCode>(status.error_code())),
      ": ", status.error_message());
}

// Codes after which the same batch may succeed on another server; the
// others (a refused token, a malformed request) would fail anywhere.
bool Retryable(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::UNAVAILABLE:
    case grpc::StatusCode::CANCELLED:
    case grpc::StatusCode::DEADLINE_EXCEEDED:
    case grpc::StatusCode::INTERNAL:
    case grpc::StatusCode::UNKNOWN:
    case grpc::StatusCode::ABORTED:
      return true;
    default:
      return false;
  }
}

double SecondsBetween(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

// One batch from Submit until its future is set.
struct Pending {
  uint64_t id = 0;
  int64_t rows = 0;
  double temperature = 0;
  v1::DistillRequest request;
  std::promise<Result> promise;
  Clock::time_point start;
  // When it was last handed to a stream.
  Clock::time_point sent;
};

// One Distill call. Its reader thread owns reading; writers hold write_mu.
struct Stream {
  grpc::ClientContext context;
  std::unique_ptr<StreamRW> rw;
  double temperature = 0;
  // Guarded by the client's mutex: new batches may be sent here.
  bool accepting = true;
  // Guarded by the client's mutex: batches sent here and not yet answered.
  std::map<uint64_t, std::shared_ptr<Pending>> inflight;
  absl::Mutex write_mu;
  // Set (under write_mu) once the reader saw the end; no write after it.
  bool finished ABSL_GUARDED_BY(write_mu) = false;
  std::thread reader;
  // Guarded by the client's mutex: the reader is about to return.
  bool reader_done = false;
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
  // Samples sent and not yet answered.
  int64_t outstanding = 0;
  std::vector<std::shared_ptr<Stream>> streams;
};

}  // namespace

class RemoteTeacher::Impl {
 public:
  explicit Impl(RemoteTeacherOptions options) : options_(std::move(options)) {}
  ~Impl();

  absl::Status Connect();
  TargetsFuture Submit(const data::Batch& batch, double temperature);
  nlohmann::json TakeStats();
  const v1::InfoResponse& info() const { return info_; }
  std::string description() const;

 private:
  struct Write {
    std::shared_ptr<Stream> stream;
    std::shared_ptr<Pending> pending;
  };

  std::shared_ptr<Endpoint> AddEndpoint(const std::string& address)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  grpc::Status CallInfo(Endpoint& endpoint, bool wait_for_ready,
                        v1::InfoResponse* info);
  void Authorize(grpc::ClientContext& context) const;
  void Dispatch(std::shared_ptr<Pending> pending, std::vector<Write>& writes)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  std::shared_ptr<Stream> StreamFor(const std::shared_ptr<Endpoint>& endpoint,
                                    double temperature)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void PerformWrites(std::vector<Write>& writes) ABSL_LOCKS_EXCLUDED(mu_);
  void ReadLoop(std::shared_ptr<Endpoint> endpoint,
                std::shared_ptr<Stream> stream);
  Result Decode(const Endpoint& endpoint, const Pending& pending,
                const v1::DistillResponse& response) const;
  void MarkDown(Endpoint& endpoint, const std::string& error)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void MarkSilentEndpointsDown(Clock::time_point now)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool AnyUp() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void FailEverything(const absl::Status& status)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Supervise();

  const RemoteTeacherOptions options_;
  v1::InfoResponse info_;

  mutable absl::Mutex mu_;
  absl::CondVar wake_;
  std::vector<std::shared_ptr<Endpoint>> endpoints_ ABSL_GUARDED_BY(mu_);
  // Batches no endpoint could take, in submission order.
  std::deque<std::shared_ptr<Pending>> waiting_ ABSL_GUARDED_BY(mu_);
  // Set once no endpoint is up, reset when one comes back.
  std::optional<Clock::time_point> all_down_since_ ABSL_GUARDED_BY(mu_);
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

RemoteTeacher::Impl::~Impl() {
  std::vector<std::shared_ptr<Stream>> streams;
  {
    absl::MutexLock lock(&mu_);
    shutting_down_ = true;
    for (auto& endpoint : endpoints_) {
      for (auto& stream : endpoint->streams) {
        stream->context.TryCancel();
        streams.push_back(stream);
      }
    }
    wake_.SignalAll();
  }
  if (supervisor_.joinable()) supervisor_.join();
  // No stream is opened after shutting_down_: readers stop dispatching.
  for (auto& stream : streams) {
    if (stream->reader.joinable()) stream->reader.join();
  }
  absl::MutexLock lock(&mu_);
  for (auto& pending : waiting_) {
    pending->promise.set_value(absl::CancelledError("teacher client closed"));
  }
}

std::shared_ptr<Endpoint> RemoteTeacher::Impl::AddEndpoint(
    const std::string& address) {
  auto endpoint = std::make_shared<Endpoint>();
  endpoint->address = address;
  grpc::ChannelArguments args;
  // Targets of a large vocabulary exceed gRPC's 4 MiB default.
  args.SetMaxReceiveMessageSize(-1);
  args.SetMaxSendMessageSize(-1);
  // A restarted server is found within a second.
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
  std::shared_ptr<grpc::ChannelCredentials> credentials;
  if (options_.tls_ca_pem.empty()) {
    credentials = grpc::InsecureChannelCredentials();
  } else {
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = options_.tls_ca_pem;
    credentials = grpc::SslCredentials(ssl);
  }
  endpoint->channel = grpc::CreateCustomChannel(address, credentials, args);
  endpoint->stub = v1::Teacher::NewStub(endpoint->channel);
  endpoint->next_retry = Clock::now();
  endpoints_.push_back(endpoint);
  return endpoint;
}

void RemoteTeacher::Impl::Authorize(grpc::ClientContext& context) const {
  if (!options_.token.empty()) {
    context.AddMetadata("authorization", "Bearer " + options_.token);
  }
}

grpc::Status RemoteTeacher::Impl::CallInfo(Endpoint& endpoint,
                                           bool wait_for_ready,
                                           v1::InfoResponse* info) {
  grpc::ClientContext context;
  Authorize(context);
  context.set_wait_for_ready(wait_for_ready);
  context.set_deadline(
      std::chrono::system_clock::now() +
      std::chrono::milliseconds(
          static_cast<int64_t>(1000 * options_.connect_timeout_seconds)));
  return endpoint.stub->Info(&context, v1::InfoRequest(), info);
}

absl::Status RemoteTeacher::Impl::Connect() {
  std::vector<std::string> addresses = options_.endpoints;
  if (!options_.registry_dir.empty()) {
    DISTILL_ASSIGN_OR_RETURN(std::vector<std::string> registered,
                             ReadRegistry(options_.registry_dir));
    for (const auto& address : registered) {
      if (std::find(addresses.begin(), addresses.end(), address) ==
          addresses.end()) {
        addresses.push_back(address);
      }
    }
  }
  if (addresses.empty()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "no teacher server to connect to: teacher.registry_dir '",
        options_.registry_dir, "' holds no *.endpoint file"));
  }
  std::vector<std::shared_ptr<Endpoint>> endpoints;
  {
    absl::MutexLock lock(&mu_);
    for (const auto& address : addresses) {
      endpoints.push_back(AddEndpoint(address));
    }
  }
  // Info on every endpoint at once: a dead one costs one timeout, not one
  // per endpoint.
  std::vector<grpc::Status> statuses(endpoints.size());
  std::vector<v1::InfoResponse> infos(endpoints.size());
  {
    std::vector<std::thread> calls;
    for (size_t i = 0; i < endpoints.size(); ++i) {
      calls.emplace_back([&, i] {
        statuses[i] = CallInfo(*endpoints[i], /*wait_for_ready=*/true, &infos[i]);
      });
    }
    for (auto& call : calls) call.join();
  }
  const Endpoint* first = nullptr;
  std::vector<std::string> errors;
  absl::MutexLock lock(&mu_);
  for (size_t i = 0; i < endpoints.size(); ++i) {
    Endpoint& endpoint = *endpoints[i];
    if (!statuses[i].ok()) {
      endpoint.last_error = Describe(statuses[i]);
      errors.push_back(
          absl::StrCat(endpoint.address, " (", endpoint.last_error, ")"));
      if (!Retryable(statuses[i].error_code())) {
        return absl::Status(
            static_cast<absl::StatusCode>(statuses[i].error_code()),
            absl::StrCat("teacher server ", endpoint.address,
                         " refused Info: ", statuses[i].error_message()));
      }
      std::fprintf(stderr,
                   "distill: teacher server %s did not answer Info (%s); "
                   "retrying in the background\n",
                   endpoint.address.c_str(), endpoint.last_error.c_str());
      continue;
    }
    DISTILL_RETURN_IF_ERROR(
        CheckTeacherInfo(endpoint.address, infos[i], options_));
    if (first == nullptr) {
      first = &endpoint;
      info_ = infos[i];
    } else if (infos[i].model_hash() != info_.model_hash()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "teacher servers disagree: ", first->address, " serves '",
          info_.model_name(), "' (hash ", info_.model_hash(), ") but ",
          endpoint.address, " serves '", infos[i].model_name(), "' (hash ",
          infos[i].model_hash(), ")"));
    }
    endpoint.up = true;
    endpoint.last_error.clear();
  }
  if (first == nullptr) {
    return absl::UnavailableError(absl::StrCat(
        "no teacher server answered Info within ",
        options_.connect_timeout_seconds, "s: ", absl::StrJoin(errors, ", ")));
  }
  supervisor_ = std::thread(&Impl::Supervise, this);
  return absl::OkStatus();
}

TargetsFuture RemoteTeacher::Impl::Submit(const data::Batch& batch,
                                          double temperature) {
  auto pending = std::make_shared<Pending>();
  TargetsFuture future = pending->promise.get_future();
  pending->rows = batch.inputs.size(0);
  pending->temperature = temperature;
  pending->start = Clock::now();
  *pending->request.mutable_batch()->mutable_inputs() =
      teacher::ToProto(batch.inputs, v1::Tensor::FLOAT32);
  std::vector<Write> writes;
  {
    absl::MutexLock lock(&mu_);
    pending->id = next_id_++;
    pending->request.mutable_batch()->set_batch_id(pending->id);
    Dispatch(std::move(pending), writes);
  }
  PerformWrites(writes);
  return future;
}

void RemoteTeacher::Impl::Dispatch(std::shared_ptr<Pending> pending,
                                   std::vector<Write>& writes) {
  if (!failed_.ok()) {
    pending->promise.set_value(failed_);
    return;
  }
  while (true) {
    std::shared_ptr<Endpoint> best;
    for (size_t i = 0; i < endpoints_.size(); ++i) {
      const auto& endpoint = endpoints_[(next_endpoint_ + i) % endpoints_.size()];
      if (endpoint->up &&
          (best == nullptr || endpoint->outstanding < best->outstanding)) {
        best = endpoint;
      }
    }
    ++next_endpoint_;
    if (best == nullptr) {
      waiting_.push_back(std::move(pending));
      wake_.Signal();
      return;
    }
    std::shared_ptr<Stream> stream = StreamFor(best, pending->temperature);
    if (stream == nullptr) continue;  // StreamFor marked `best` down.
    best->outstanding += pending->rows;
    pending->sent = Clock::now();
    stream->inflight[pending->id] = pending;
    writes.push_back({std::move(stream), std::move(pending)});
    return;
  }
}

std::shared_ptr<Stream> RemoteTeacher::Impl::StreamFor(
    const std::shared_ptr<Endpoint>& endpoint, double temperature) {
  for (const auto& stream : endpoint->streams) {
    if (stream->accepting && stream->temperature == temperature) return stream;
  }
  // The header fixes the temperature: retire the endpoint's stream for the
  // previous one (its answered batches let it end, see ReadLoop).
  for (const auto& stream : endpoint->streams) {
    if (stream->accepting) {
      stream->accepting = false;
      if (stream->inflight.empty()) stream->context.TryCancel();
    }
  }
  // Forget streams whose reader has ended (a temperature schedule opens one
  // per step).
  auto& streams = endpoint->streams;
  for (auto it = streams.begin(); it != streams.end();) {
    if ((*it)->reader_done) {
      (*it)->reader.join();
      it = streams.erase(it);
    } else {
      ++it;
    }
  }
  auto stream = std::make_shared<Stream>();
  stream->temperature = temperature;
  Authorize(stream->context);
  stream->rw = endpoint->stub->Distill(&stream->context);
  v1::DistillRequest header;
  header.mutable_header()->set_temperature(temperature);
  header.mutable_header()->set_encoding(options_.encoding);
  header.mutable_header()->set_top_k(options_.top_k);
  bool written;
  {
    absl::MutexLock write_lock(&stream->write_mu);
    written = stream->rw->Write(header);
  }
  // The reader runs even when the header failed: it collects the status.
  stream->reader = std::thread(&Impl::ReadLoop, this, endpoint, stream);
  endpoint->streams.push_back(stream);
  if (!written) {
    stream->accepting = false;
    MarkDown(*endpoint, "the Distill stream could not be opened");
    return nullptr;
  }
  return stream;
}

void RemoteTeacher::Impl::PerformWrites(std::vector<Write>& writes) {
  for (Write& write : writes) {
    absl::MutexLock write_lock(&write.stream->write_mu);
    // A failed write needs nothing here: the stream's reader sees the
    // broken call and resends everything still in flight on it.
    if (!write.stream->finished) write.stream->rw->Write(write.pending->request);
  }
  writes.clear();
}

Result RemoteTeacher::Impl::Decode(
    const Endpoint& endpoint, const Pending& pending,
    const v1::DistillResponse& response) const {
  const v1::SoftTargets& targets = response.targets();
  auto bad = [&](const std::string& what) {
    return absl::DataLossError(absl::StrCat(
        "teacher server ", endpoint.address, " answered batch ", pending.id,
        " with bad targets: ", what));
  };
  if (targets.encoding() != options_.encoding) {
    return bad(absl::StrCat("encoding ", teacher::EncodingName(targets.encoding()),
                            " instead of ",
                            teacher::EncodingName(options_.encoding)));
  }
  if (std::abs(targets.temperature() - pending.temperature) >
      1e-9 * pending.temperature) {
    return bad(absl::StrCat("temperature ", targets.temperature(),
                            " instead of ", pending.temperature));
  }
  if (targets.num_classes() != options_.num_classes) {
    return bad(absl::StrCat(targets.num_classes(), " classes instead of ",
                            options_.num_classes));
  }
  Result decoded = teacher::DecodeTargets(targets, pending.rows);
  if (!decoded.ok()) return bad(std::string(decoded.status().message()));
  return decoded;
}

void RemoteTeacher::Impl::ReadLoop(std::shared_ptr<Endpoint> endpoint,
                                   std::shared_ptr<Stream> stream) {
  v1::DistillResponse response;
  std::string protocol_error;
  while (stream->rw->Read(&response)) {
    std::shared_ptr<Pending> pending;
    {
      absl::MutexLock lock(&mu_);
      auto it = stream->inflight.find(response.batch_id());
      if (it != stream->inflight.end()) {
        pending = std::move(it->second);
        stream->inflight.erase(it);
        endpoint->outstanding -= pending->rows;
      }
    }
    if (pending == nullptr) {
      protocol_error = absl::StrCat("answered batch id ", response.batch_id(),
                                    ", which is not in flight on its stream");
      stream->context.TryCancel();
      break;
    }
    Result result = Decode(*endpoint, *pending, response);
    {
      absl::MutexLock lock(&mu_);
      if (result.ok()) {
        latencies_ms_.push_back(
            1000 * SecondsBetween(pending->start, Clock::now()));
        samples_ += pending->rows;
        if (result->form == losses::TeacherTargets::Form::kTopK) {
          topk_mass_sum_ +=
              (1 - result->tail_mass).sum().item<double>() /
              std::max<int64_t>(1, result->tail_mass.numel() / pending->rows);
        }
      }
      // A retired stream ends once its last batch is answered.
      if (!stream->accepting && stream->inflight.empty()) {
        stream->context.TryCancel();
      }
    }
    pending->promise.set_value(std::move(result));
  }
  grpc::Status status;
  {
    absl::MutexLock write_lock(&stream->write_mu);
    stream->finished = true;
    status = stream->rw->Finish();
  }
  std::vector<Write> writes;
  {
    absl::MutexLock lock(&mu_);
    const bool retired = !stream->accepting;
    stream->accepting = false;
    stream->reader_done = true;
    std::map<uint64_t, std::shared_ptr<Pending>> orphans;
    orphans.swap(stream->inflight);
    for (const auto& [id, pending] : orphans) {
      endpoint->outstanding -= pending->rows;
    }
    if (shutting_down_) {
      for (auto& [id, pending] : orphans) {
        pending->promise.set_value(absl::CancelledError("teacher client closed"));
      }
      return;
    }
    const bool clean = protocol_error.empty() &&
                       (status.ok() || (retired && orphans.empty() &&
                                        status.error_code() ==
                                            grpc::StatusCode::CANCELLED));
    if (!clean && protocol_error.empty() && !Retryable(status.error_code())) {
      // The server refused the work itself; another server would too.
      for (auto& [id, pending] : orphans) {
        pending->promise.set_value(absl::Status(
            static_cast<absl::StatusCode>(status.error_code()),
            absl::StrCat("teacher server ", endpoint->address,
                         " ended the stream: ", status.error_message())));
      }
      return;
    }
    if (!clean && endpoint->up) {
      MarkDown(*endpoint, protocol_error.empty() ? Describe(status)
                                                 : protocol_error);
    }
    if (!orphans.empty()) {
      std::fprintf(stderr,
                   "distill: resending %zu batches of teacher server %s to "
                   "the others\n",
                   orphans.size(), endpoint->address.c_str());
    }
    for (auto& [id, pending] : orphans) {
      ++resent_;
      Dispatch(pending, writes);
    }
  }
  PerformWrites(writes);
}

void RemoteTeacher::Impl::MarkDown(Endpoint& endpoint,
                                   const std::string& error) {
  endpoint.up = false;
  endpoint.last_error = error;
  endpoint.backoff_seconds = 0.1;
  endpoint.next_retry = Clock::now();
  ++failures_;
  std::fprintf(stderr, "distill: teacher server %s failed: %s\n",
               endpoint.address.c_str(), error.c_str());
  // Its other streams are on the same dead connection: end them now so
  // their batches are resent without waiting for a timeout.
  for (auto& stream : endpoint.streams) {
    stream->accepting = false;
    stream->context.TryCancel();
  }
  if (!AnyUp() && !all_down_since_) all_down_since_ = Clock::now();
  wake_.Signal();
}

void RemoteTeacher::Impl::MarkSilentEndpointsDown(Clock::time_point now) {
  for (const auto& endpoint : endpoints_) {
    if (!endpoint->up) continue;
    const Pending* oldest = nullptr;
    for (const auto& stream : endpoint->streams) {
      for (const auto& [id, pending] : stream->inflight) {
        if (oldest == nullptr || pending->sent < oldest->sent) {
          oldest = pending.get();
        }
      }
    }
    if (oldest == nullptr ||
        SecondsBetween(oldest->sent, now) < options_.answer_timeout_seconds) {
      continue;
    }
    // Cancelling its streams hands their batches to the readers, which
    // resend them elsewhere.
    MarkDown(*endpoint, absl::StrCat("no answer to batch ", oldest->id, " within ",
                                     options_.answer_timeout_seconds, "s"));
    // A server that hangs again after answering Info would otherwise cost
    // one timeout per reconnect.
    endpoint->next_retry =
        now + std::chrono::milliseconds(static_cast<int64_t>(
                  1000 * options_.answer_timeout_seconds));
  }
}

bool RemoteTeacher::Impl::AnyUp() const {
  for (const auto& endpoint : endpoints_) {
    if (endpoint->up) return true;
  }
  return false;
}

void RemoteTeacher::Impl::FailEverything(const absl::Status& status) {
  failed_ = status;
  for (auto& pending : waiting_) pending->promise.set_value(status);
  waiting_.clear();
}

void RemoteTeacher::Impl::Supervise() {
  absl::MutexLock lock(&mu_);
  while (!shutting_down_) {
    const auto now = Clock::now();
    MarkSilentEndpointsDown(now);
    // New servers announce themselves in the registry.
    if (!options_.registry_dir.empty() && (!waiting_.empty() || !AnyUp())) {
      mu_.Unlock();
      auto registered = ReadRegistry(options_.registry_dir);
      mu_.Lock();
      if (registered.ok()) {
        for (const auto& address : *registered) {
          bool known = false;
          for (const auto& e : endpoints_) known |= e->address == address;
          if (!known) AddEndpoint(address);
        }
      }
    }
    // Reconnect attempts, each outside the lock.
    for (size_t i = 0; i < endpoints_.size(); ++i) {
      std::shared_ptr<Endpoint> endpoint = endpoints_[i];
      if (endpoint->up || endpoint->refused || endpoint->next_retry > now) {
        continue;
      }
      mu_.Unlock();
      v1::InfoResponse info;
      grpc::Status status = CallInfo(*endpoint, /*wait_for_ready=*/false, &info);
      absl::Status fits = status.ok()
                              ? CheckTeacherInfo(endpoint->address, info, options_)
                              : absl::OkStatus();
      if (status.ok() && fits.ok() && info.model_hash() != info_.model_hash()) {
        fits = absl::FailedPreconditionError(absl::StrCat(
            "serves '", info.model_name(), "' (hash ", info.model_hash(),
            "), not the job's teacher (hash ", info_.model_hash(), ")"));
      }
      mu_.Lock();
      if (shutting_down_) break;
      if (status.ok() && fits.ok()) {
        endpoint->up = true;
        endpoint->last_error.clear();
        all_down_since_.reset();
        std::fprintf(stderr, "distill: teacher server %s is serving\n",
                     endpoint->address.c_str());
      } else if (status.ok()) {
        endpoint->refused = true;
        endpoint->last_error = std::string(fits.message());
        std::fprintf(stderr, "distill: not using teacher server %s: %s\n",
                     endpoint->address.c_str(), endpoint->last_error.c_str());
      } else {
        endpoint->last_error = Describe(status);
        endpoint->next_retry =
            Clock::now() + std::chrono::milliseconds(static_cast<int64_t>(
                               1000 * endpoint->backoff_seconds));
        endpoint->backoff_seconds =
            std::min(2 * endpoint->backoff_seconds, kMaxBackoffSeconds);
      }
    }
    if (shutting_down_) break;
    std::vector<Write> writes;
    if (!waiting_.empty() && AnyUp()) {
      std::deque<std::shared_ptr<Pending>> ready;
      ready.swap(waiting_);
      for (auto& pending : ready) Dispatch(std::move(pending), writes);
    }
    if (!waiting_.empty() && all_down_since_ &&
        SecondsBetween(*all_down_since_, Clock::now()) >=
            options_.failover_grace_seconds) {
      std::vector<std::string> lines;
      for (const auto& endpoint : endpoints_) {
        lines.push_back(absl::StrCat(endpoint->address, " (last error: ",
                                     endpoint->last_error, ")"));
      }
      FailEverything(absl::UnavailableError(absl::StrCat(
          "no teacher server has answered for ", options_.failover_grace_seconds,
          "s: ", absl::StrJoin(lines, ", "))));
    }
    if (!writes.empty()) {
      mu_.Unlock();
      PerformWrites(writes);
      mu_.Lock();
    }
    // Sleep until the next retry or grace deadline, or until woken.
    absl::Duration wait = absl::Seconds(0.5);
    for (const auto& endpoint : endpoints_) {
      if (!endpoint->up && !endpoint->refused) {
        wait = std::min(wait, absl::FromChrono(endpoint->next_retry - Clock::now()));
      }
    }
    if (all_down_since_) wait = std::min(wait, absl::Milliseconds(50));
    if (wait > absl::ZeroDuration()) wake_.WaitWithTimeout(&mu_, wait);
  }
}

nlohmann::json RemoteTeacher::Impl::TakeStats() {
  absl::MutexLock lock(&mu_);
  nlohmann::json stats;
  const int64_t batches = static_cast<int64_t>(latencies_ms_.size());
  stats["teacher_batches"] = batches;
  stats["teacher_samples"] = samples_;
  stats["teacher_resent_batches"] = resent_;
  stats["teacher_endpoint_failures"] = failures_;
  if (batches > 0) {
    std::sort(latencies_ms_.begin(), latencies_ms_.end());
    double sum = 0;
    for (double l : latencies_ms_) sum += l;
    stats["teacher_latency_ms_mean"] = sum / batches;
    const int64_t p95 = static_cast<int64_t>(std::ceil(0.95 * batches)) - 1;
    stats["teacher_latency_ms_p95"] = latencies_ms_[std::max<int64_t>(p95, 0)];
    if (options_.encoding == v1::TOP_K && samples_ > 0) {
      stats["teacher_topk_mass_mean"] = topk_mass_sum_ / samples_;
    }
  }
  latencies_ms_.clear();
  samples_ = resent_ = failures_ = 0;
  topk_mass_sum_ = 0;
  return stats;
}

std::string RemoteTeacher::Impl::description() const {
  std::vector<std::string> addresses;
  {
    absl::MutexLock lock(&mu_);
    for (const auto& endpoint : endpoints_) addresses.push_back(endpoint->address);
  }
  return absl::StrCat("teacher servers ", absl::StrJoin(addresses, ", "), " ('",
                      info_.model_name(), "', hash ",
                      info_.model_hash().substr(0, 12), ")");
}

RemoteTeacher::RemoteTeacher(std::unique_ptr<Impl> impl)
    : impl_(std::move(impl)) {}
RemoteTeacher::~RemoteTeacher() = default;

absl::StatusOr<std::unique_ptr<RemoteTeacher>> RemoteTeacher::Connect(
    const RemoteTeacherOptions& options) {
  auto impl = std::make_unique<Impl>(options);
  DISTILL_RETURN_IF_ERROR(impl->Connect());
  return std::unique_ptr<RemoteTeacher>(new RemoteTeacher(std::move(impl)));
}

absl::StatusOr<losses::TeacherTargets> RemoteTeacher::Targets(
    const data::Batch& batch, double temperature) {
  return Submit(batch, temperature).get();
}

TargetsFuture RemoteTeacher::Submit(const data::Batch& batch,
                                    double temperature) {
  return impl_->Submit(batch, temperature);
}

nlohmann::json RemoteTeacher::TakeStats() { return impl_->TakeStats(); }

int64_t RemoteTeacher::num_classes() const { return impl_->info().num_classes(); }

std::string RemoteTeacher::description() const { return impl_->description(); }

std::string RemoteTeacher::model_hash() const {
  return impl_->info().model_hash();
}

}  // namespace distill::trainer
