// RemoteTeacher's endpoint lifecycle: channels, the connect-time Info calls
// and checks, marking a server down (broken stream, silence), the
// supervisor that reconnects, rescans the registry, hands waiting batches
// to servers that are back and fails everything after the grace period.
#include <algorithm>
#include <cstdio>
#include <limits>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"
#include "common/status.h"
#include "common/torch_status.h"
#include "teacher_server/chunks.h"
#include "teacher_server/grpc_status.h"
#include "teacher_server/output_head.h"
#include "trainer/teacher/internal/remote_state.h"
#include "trainer/teacher/internal/teacher_info.h"

namespace distill::trainer {

using remote::Clock;
using remote::Describe;
using remote::Endpoint;
using remote::kMaxBackoffSeconds;
using remote::Pending;
using remote::Retryable;
using remote::SecondsBetween;
using teacher::FromGrpcStatus;

std::shared_ptr<Endpoint> RemoteTeacher::Impl::AddEndpoint(
    const std::string& address) {
  auto endpoint = std::make_shared<Endpoint>();
  endpoint->address = address;
  grpc::ChannelArguments args;
  // gRPC's receive limit: no message may be larger than the whole answer to
  // this client's largest batch (every row of it in the stream's encoding),
  // nor than max_answer_bytes (larger answers come in chunks under it),
  // plus framing. A server cannot make the client take more than that.
  const int64_t most = ReceiveLimit();
  args.SetMaxReceiveMessageSize(
      most == std::numeric_limits<int64_t>::max()
          ? -1
          : static_cast<int>(
                std::min<int64_t>(most, std::numeric_limits<int>::max())));
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

int64_t RemoteTeacher::Impl::ReceiveLimit() const {
  const int64_t rows =
      options_.max_batch_rows *
      (options_.tokenizer_sha256.empty() || options_.input_shape.empty()
           ? 1
           : options_.input_shape[0]);
  int64_t most = rows * AnswerRowBytes();
  if (most <= 0) return std::numeric_limits<int64_t>::max();  // unknown
  if (options_.max_answer_bytes > 0) {
    most = std::min(most, options_.max_answer_bytes);
  }
  return most + teacher::kChunkFramingBytes;
}

absl::StatusOr<std::shared_ptr<const losses::OutputHead>>
RemoteTeacher::Impl::FetchOutputHead(Endpoint& endpoint) {
  const std::string who = absl::StrCat("teacher server ", endpoint.address);
  teacher::OutputHeadAssembler head(info_.num_classes(), info_.hidden_size());
  const auto timeout = std::chrono::milliseconds(
      static_cast<int64_t>(1000 * options_.connect_timeout_seconds));
  while (!head.done()) {
    grpc::ClientContext context;
    Authorize(context);
    context.set_deadline(std::chrono::system_clock::now() + timeout);
    v1::OutputHeadRequest request;
    request.set_first_row(head.next_row());
    request.set_max_bytes(
        std::min<int64_t>(teacher::kDefaultHeadPageBytes, ReceiveLimit()));
    v1::OutputHeadPage page;
    const grpc::Status status =
        endpoint.stub->OutputHead(&context, request, &page);
    if (!status.ok()) {
      return absl::Status(
          FromGrpcStatus(status).code(),
          absl::StrCat(who, " did not send its output head (row ",
                       head.next_row(), "): ", status.error_message()));
    }
    DISTILL_RETURN_IF_ERROR(
        Annotate(TorchCall("reading the teacher's output head",
                           [&] { return head.Add(page, request.max_bytes()); }),
                 who));
  }
  absl::StatusOr<std::shared_ptr<const losses::OutputHead>> joined = TorchCall(
      "joining the teacher's output head", [&] { return head.Finish(); });
  if (!joined.ok()) return Annotate(joined.status(), who);
  std::fprintf(stderr,
               "distill: fetched the teacher's output head [%lld, %lld] from "
               "%s\n",
               static_cast<long long>(info_.num_classes()),
               static_cast<long long>(info_.hidden_size()),
               endpoint.address.c_str());
  return joined;
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
  const auto timeout = std::chrono::milliseconds(
      static_cast<int64_t>(1000 * options_.connect_timeout_seconds));
  context.set_deadline(std::chrono::system_clock::now() + timeout);
  grpc::Status status = endpoint.stub->Info(&context, v1::InfoRequest(), info);
  if (!wait_for_ready ||
      status.error_code() != grpc::StatusCode::DEADLINE_EXCEEDED) {
    return status;
  }
  // A call that waited for the channel says only that time ran out. A
  // fail-fast call on the same channel reports why it could not connect
  // (refused, a TLS certificate for another host) when it keeps failing;
  // it may also just succeed now.
  grpc::ClientContext probe;
  Authorize(probe);
  probe.set_deadline(
      std::chrono::system_clock::now() +
      std::min<std::chrono::milliseconds>(timeout, std::chrono::seconds(1)));
  grpc::Status why = endpoint.stub->Info(&probe, v1::InfoRequest(), info);
  if (why.ok() || why.error_code() == grpc::StatusCode::UNAVAILABLE) {
    return why;
  }
  return status;
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
    return absl::FailedPreconditionError(
        absl::StrCat("no teacher server to connect to: teacher.registry_dir '",
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
        statuses[i] =
            CallInfo(*endpoints[i], /*wait_for_ready=*/true, &infos[i]);
      });
    }
    for (auto& call : calls) call.join();
  }
  std::shared_ptr<Endpoint> first;
  std::vector<std::string> errors;
  {
    absl::MutexLock lock(&mu_);
    for (size_t i = 0; i < endpoints.size(); ++i) {
      Endpoint& endpoint = *endpoints[i];
      if (!statuses[i].ok()) {
        endpoint.last_error = Describe(statuses[i]);
        errors.push_back(
            absl::StrCat(endpoint.address, " (", endpoint.last_error, ")"));
        if (!Retryable(statuses[i].error_code())) {
          return absl::Status(
              FromGrpcStatus(statuses[i]).code(),
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
        first = endpoints[i];
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
      return absl::UnavailableError(
          absl::StrCat("no teacher server answered Info within ",
                       options_.connect_timeout_seconds,
                       "s: ", absl::StrJoin(errors, ", ")));
    }
  }
  // Hidden-state answers need the head once; every endpoint serves the
  // same model (hash checked above and at every reconnect), so one copy
  // serves them all.
  if (options_.encoding == v1::HIDDEN_FP16) {
    // From the first endpoint that sends a good one. One that sent a bad
    // head (not merely none in time) is not used for answers either.
    absl::Status why;
    for (size_t i = 0; head_ == nullptr && i < endpoints.size(); ++i) {
      if (!statuses[i].ok()) continue;
      absl::StatusOr<std::shared_ptr<const losses::OutputHead>> head =
          FetchOutputHead(*endpoints[i]);
      if (head.ok()) {
        head_ = *std::move(head);
        break;
      }
      why = head.status();
      std::fprintf(stderr, "distill: %s\n", std::string(why.message()).c_str());
      if (why.code() != absl::StatusCode::kUnavailable &&
          why.code() != absl::StatusCode::kDeadlineExceeded) {
        absl::MutexLock lock(&mu_);
        endpoints[i]->up = false;
        endpoints[i]->refused = true;
        endpoints[i]->last_error = std::string(why.message());
      }
    }
    if (head_ == nullptr) return why;
  }
  supervisor_ = std::thread(&Impl::Supervise, this);
  return absl::OkStatus();
}

void RemoteTeacher::Impl::MarkDown(Endpoint& endpoint,
                                   const std::string& error) {
  endpoint.up = false;
  endpoint.last_error = error;
  // The first failure reconnects at once (a restarted server is back within
  // a second); each further one without an answer between waits twice as
  // long, up to kMaxBackoffSeconds.
  ++endpoint.failures_in_a_row;
  endpoint.backoff_seconds =
      std::min(0.1 * (1 << std::min(endpoint.failures_in_a_row - 1, 8)),
               kMaxBackoffSeconds);
  endpoint.next_retry =
      Clock::now() + (endpoint.failures_in_a_row > 1
                          ? std::chrono::milliseconds(static_cast<int64_t>(
                                1000 * endpoint.backoff_seconds))
                          : std::chrono::milliseconds(0));
  ++failures_;
  std::fprintf(stderr, "distill: teacher server %s failed: %s\n",
               endpoint.address.c_str(), error.c_str());
  // Its other streams are on the same dead connection: end them now so
  // their batches are resent without waiting for a timeout.
  for (auto& stream : endpoint.streams) {
    stream->accepting = false;
    stream->context.TryCancel();
  }
  wake_.Signal();  // the supervisor starts the grace clock if all are down
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
    MarkDown(*endpoint,
             absl::StrCat("no answer to batch ", oldest->id, " within ",
                          options_.answer_timeout_seconds, "s"));
    // A server that hangs again after answering Info would otherwise cost
    // one timeout per reconnect.
    endpoint->next_retry = now + std::chrono::milliseconds(static_cast<int64_t>(
                                     1000 * options_.answer_timeout_seconds));
  }
}

bool RemoteTeacher::Impl::AnyInFlight() const {
  for (const auto& endpoint : endpoints_) {
    for (const auto& stream : endpoint->streams) {
      if (!stream->inflight.empty()) return true;
    }
  }
  return false;
}

bool RemoteTeacher::Impl::AnyUpEndpointWithinAnswerTimeout(
    Clock::time_point now) const {
  for (const auto& endpoint : endpoints_) {
    if (!endpoint->up) continue;
    for (const auto& stream : endpoint->streams) {
      for (const auto& [id, pending] : stream->inflight) {
        if (SecondsBetween(pending->sent, now) <
            options_.answer_timeout_seconds) {
          return true;
        }
      }
    }
  }
  return false;
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
      grpc::Status status =
          CallInfo(*endpoint, /*wait_for_ready=*/false, &info);
      absl::Status fits =
          status.ok() ? CheckTeacherInfo(endpoint->address, info, options_)
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
    if (!waiting_.empty() && AnyUp()) {
      std::deque<std::shared_ptr<Pending>> ready;
      ready.swap(waiting_);
      for (auto& pending : ready) Dispatch(std::move(pending));
    }
    // The grace clock runs while work is outstanding, from the moment every
    // endpoint was down until a batch is answered: reconnecting (Info) does
    // not stop it. With no work outstanding there is nothing to wait for
    // (the trainer evaluates, checkpoints), so it starts again with the
    // next batch if every endpoint is still down then. A server that is up
    // again still gets answer_timeout_seconds for the batches it was sent.
    const bool outstanding = !waiting_.empty() || AnyInFlight();
    if (!outstanding) {
      unanswered_since_.reset();
    } else if (!unanswered_since_ && !AnyUp()) {
      unanswered_since_ = Clock::now();
    }
    if (failed_.ok() && outstanding && unanswered_since_ &&
        SecondsBetween(*unanswered_since_, Clock::now()) >=
            options_.failover_grace_seconds &&
        !AnyUpEndpointWithinAnswerTimeout(Clock::now())) {
      std::vector<std::string> lines;
      for (const auto& endpoint : endpoints_) {
        lines.push_back(
            endpoint->up
                ? absl::StrCat(endpoint->address,
                               " (connected, but no batch answered)")
                : absl::StrCat(endpoint->address,
                               " (last error: ", endpoint->last_error, ")"));
      }
      const std::string reason = absl::StrCat(
          "no teacher server has answered for ",
          options_.failover_grace_seconds, "s: ", absl::StrJoin(lines, ", "));
      FailEverything(absl::UnavailableError(reason));
      // Batches in flight come back to Dispatch when their streams end,
      // which fails them with the same status.
      for (const auto& endpoint : endpoints_) {
        if (endpoint->up) MarkDown(*endpoint, reason);
      }
    }
    // Sleep until the next retry or grace deadline, or until woken.
    absl::Duration wait = absl::Seconds(0.5);
    for (const auto& endpoint : endpoints_) {
      if (!endpoint->up && !endpoint->refused) {
        wait = std::min(wait,
                        absl::FromChrono(endpoint->next_retry - Clock::now()));
      }
    }
    if (unanswered_since_) wait = std::min(wait, absl::Milliseconds(50));
    if (wait > absl::ZeroDuration()) wake_.WaitWithTimeout(&mu_, wait);
  }
}

}  // namespace distill::trainer
