#include "teacher_server/server.h"

#include <grpcpp/health_check_service_interface.h>
#include <grpcpp/resource_quota.h>
#include <grpcpp/server_posix.h>

#include <algorithm>
#include <limits>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "teacher_server/listener.h"

namespace distill::teacher {
namespace {

// Bytes one input sample takes on the wire.
int64_t SampleBytes(const ServedModel& model) {
  int64_t n = model.input_dtype == v1::Tensor::FLOAT32 ||
                      model.input_dtype == v1::Tensor::INT32
                  ? 4
                  : 8;
  for (int64_t d : model.input_shape) n *= d;
  return n;
}

// Distributions per sample: 1, or S for a language model's [S, V].
int64_t OutputRows(const ServedModel& model) {
  int64_t rows = 1;
  for (size_t i = 0; i + 1 < model.output_shape.size(); ++i) {
    rows *= model.output_shape[i];
  }
  return rows;
}

std::string HostPort(const std::string& host, int port) {
  return absl::StrContains(host, ':') ? absl::StrCat("[", host, "]:", port)
                                      : absl::StrCat(host, ":", port);
}

}  // namespace

absl::StatusOr<std::unique_ptr<TeacherServer>> TeacherServer::Start(
    ServedModel model, const ServerOptions& options) {
  if (options.batcher.max_batch < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "max_batch must be >= 1, got ", options.batcher.max_batch));
  }
  if (options.batcher.max_queue_delay < absl::ZeroDuration()) {
    return absl::InvalidArgumentError("max_queue_delay must be >= 0");
  }
  if (options.max_inflight_per_stream < 1) {
    return absl::InvalidArgumentError("max_inflight_per_stream must be >= 1");
  }
  if (options.idle_timeout <= absl::ZeroDuration() ||
      options.handshake_timeout <= absl::ZeroDuration() ||
      options.keepalive_time <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        "idle_timeout, handshake_timeout and keepalive_time must be > 0");
  }
  if (options.max_transport_bytes < -1) {
    return absl::InvalidArgumentError(
        "max_transport_bytes must be -1 (automatic), 0 (none) or positive");
  }
  if (options.max_streams < 1) {
    return absl::InvalidArgumentError("max_streams must be >= 1");
  }
  if (options.batcher.max_queued_samples < 1) {
    return absl::InvalidArgumentError("max_queued_samples must be >= 1");
  }
  if (options.port < 0 || options.port > 65535 || options.metrics_port < 0 ||
      options.metrics_port > 65535) {
    return absl::InvalidArgumentError("ports must be in [0, 65535]");
  }
  if (options.tls_cert_pem.empty() != options.tls_key_pem.empty()) {
    return absl::InvalidArgumentError(
        "TLS needs both a certificate and a private key");
  }
  std::unique_ptr<TeacherServer> server(new TeacherServer);
  server->host_ = options.host;
  server->drain_timeout_ = options.drain_timeout;
  server->model_ = std::make_unique<ServedModel>(std::move(model));
  server->metrics_ = std::make_unique<ServerMetrics>(options.batcher.max_batch);

  ServiceOptions service_options;
  service_options.batcher = options.batcher;
  service_options.max_request_bytes =
      options.max_request_bytes > 0
          ? options.max_request_bytes
          : options.batcher.max_batch *
                    (SampleBytes(*server->model_) +
                     4 * options.max_index_k * OutputRows(*server->model_)) +
                (64 << 10);
  service_options.max_index_k = options.max_index_k;
  service_options.max_inflight_per_stream = options.max_inflight_per_stream;
  service_options.max_streams = options.max_streams;
  service_options.token = options.token;
  server->service_ = std::make_unique<TeacherService>(
      server->model_.get(), service_options, server->metrics_.get());

  std::shared_ptr<grpc::ServerCredentials> credentials;
  if (options.tls_cert_pem.empty()) {
    credentials = grpc::InsecureServerCredentials();
  } else {
    grpc::SslServerCredentialsOptions ssl;
    ssl.pem_key_cert_pairs.push_back(
        {options.tls_key_pem, options.tls_cert_pem});
    credentials = grpc::SslServerCredentials(ssl);
  }
  grpc::EnableDefaultHealthCheckService(true);
  grpc::ServerBuilder builder;
  const std::string address = HostPort(options.host, options.port);
  if (options.tls_cert_pem.empty()) {
    // Our listener, which survives running out of descriptors (listener.h).
    auto listener = Listener::Bind(options.host, options.port);
    if (!listener.ok()) {
      server->service_->StopBatcher();
      return listener.status();
    }
    server->listener_ = *std::move(listener);
    server->port_ = server->listener_->port();
  } else {
    builder.AddListeningPort(address, credentials, &server->port_);
  }
  builder.SetMaxReceiveMessageSize(static_cast<int>(std::min<int64_t>(
      service_options.max_request_bytes, std::numeric_limits<int>::max())));
  auto milliseconds = [](absl::Duration d) {
    return static_cast<int>(std::min<int64_t>(absl::ToInt64Milliseconds(d),
                                              std::numeric_limits<int>::max()));
  };
  // Descriptors held by idle, half-open or dead connections are freed.
  builder.AddChannelArgument(GRPC_ARG_MAX_CONNECTION_IDLE_MS,
                             milliseconds(options.idle_timeout));
  builder.AddChannelArgument(GRPC_ARG_SERVER_HANDSHAKE_TIMEOUT_MS,
                             milliseconds(options.handshake_timeout));
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS,
                             milliseconds(options.keepalive_time));
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 20000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  server->max_transport_bytes_ =
      options.max_transport_bytes >= 0
          ? options.max_transport_bytes
          : std::max(
                kMinAutoTransportBytes,
                kAutoTransportRequests * service_options.max_request_bytes);
  if (server->max_transport_bytes_ > 0) {
    grpc::ResourceQuota quota("teacher_server");
    quota.Resize(static_cast<size_t>(server->max_transport_bytes_));
    builder.SetResourceQuota(quota);
  }
  builder.RegisterService(server->service_.get());
  server->server_ = builder.BuildAndStart();
  if (server->server_ == nullptr || server->port_ == 0) {
    server->service_->StopBatcher();
    return absl::UnavailableError(absl::StrCat("cannot listen on ", address));
  }
  grpc::HealthCheckServiceInterface* health =
      server->server_->GetHealthCheckService();
  health->SetServingStatus("", true);
  health->SetServingStatus(kTeacherServiceName, true);
  if (server->listener_ != nullptr) {
    grpc::Server* grpc_server = server->server_.get();
    server->listener_->Start([grpc_server](int fd) {
      grpc::AddInsecureChannelFromFd(grpc_server, fd);
    });
  }

  if (options.metrics_port != 0) {
    absl::Status serving =
        server->metrics_->Serve(options.host, options.metrics_port);
    if (!serving.ok()) {
      server->Shutdown();
      return serving;
    }
  }
  return server;
}

TeacherServer::~TeacherServer() { Shutdown(); }

std::string TeacherServer::address() const { return HostPort(host_, port_); }

void TeacherServer::Shutdown() {
  absl::MutexLock lock(&shutdown_mu_);
  if (shut_down_) return;
  shut_down_ = true;
  // No new connections once draining starts.
  if (listener_ != nullptr) listener_->Stop();
  if (server_ != nullptr) {
    // Health first, so balancers stop sending work before streams end.
    server_->GetHealthCheckService()->SetServingStatus(false);
    service_->Drain();
    server_->Shutdown(absl::ToChronoTime(absl::Now() + drain_timeout_));
    server_->Wait();
  }
  service_->StopBatcher();
}

}  // namespace distill::teacher
