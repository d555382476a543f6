// A running teacher server: the gRPC server with the Teacher service and
// standard health checking, listening on host:port (plain or TLS), and the
// optional Prometheus endpoint. The teacher_server binary is a thin main
// around this class; tests start it in-process. Thread-safe.
#ifndef DISTILL_TEACHER_SERVER_SERVER_H_
#define DISTILL_TEACHER_SERVER_SERVER_H_

#include <grpcpp/grpcpp.h>

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "teacher_server/batcher.h"
#include "teacher_server/listener.h"
#include "teacher_server/metrics.h"
#include "teacher_server/served_model.h"
#include "teacher_server/service.h"

namespace distill::teacher {

// The health-checking service name of the teacher service.
inline constexpr char kTeacherServiceName[] = "distill.v1.Teacher";

struct ServerOptions {
  // Address to listen on. Default: 127.0.0.1 (loopback only).
  std::string host = "127.0.0.1";
  // 0 lets the OS pick a free port (see TeacherServer::port). Default: 0.
  int port = 0;
  BatcherOptions batcher;
  // The largest request message accepted; gRPC refuses larger ones with
  // RESOURCE_EXHAUSTED. 0: room for max_batch samples, their max_index_k
  // ids per output row, and 64 KiB. Default: 0.
  int64_t max_request_bytes = 0;
  // See ServiceOptions. Default: 32.
  int64_t max_index_k = 32;
  // See ServiceOptions. Default: 64.
  int max_inflight_per_stream = 64;
  // See ServiceOptions. Default: 256.
  int max_streams = 256;
  // Bearer token every call must carry. Default: empty (off).
  std::string token;
  // PEM server certificate chain and private key; both empty serves
  // plaintext. Default: plaintext.
  std::string tls_cert_pem;
  std::string tls_key_pem;
  // Port of the Prometheus endpoint on `host`; 0 serves none. Default: 0.
  int metrics_port = 0;
  // How long Shutdown waits for open streams to end before cancelling them.
  // Default: 30 s.
  absl::Duration drain_timeout = absl::Seconds(30);
  // A connection with no call open this long is closed. Default: 5 min.
  absl::Duration idle_timeout = absl::Minutes(5);
  // A TLS connection that has not finished its handshake this long after it
  // was accepted is closed (gRPC's default is 2 min). Plaintext connections
  // (accepted by Listener) have no handshake; idle_timeout closes a silent
  // one. Default: 10 s.
  absl::Duration handshake_timeout = absl::Seconds(10);
  // The server pings a connection silent this long and closes it when the
  // ping is not answered within 20 s: dead peers free their descriptors.
  // Default: 1 min.
  absl::Duration keepalive_time = absl::Minutes(1);
  // gRPC's resource quota: the memory its transports may take for buffers
  // (reads, writes, flow-control windows), across connections. Near it,
  // gRPC shrinks windows and reads less. 0: no quota. -1 (the default):
  // kAutoTransportRequests x the largest request, at least
  // kMinAutoTransportBytes.
  int64_t max_transport_bytes = -1;
};

inline constexpr int64_t kMinAutoTransportBytes = int64_t{256} << 20;
inline constexpr int64_t kAutoTransportRequests = 4;

class TeacherServer {
 public:
  // Starts serving `model`. InvalidArgument for bad options; Unavailable
  // when the address (or the metrics port) cannot be bound.
  static absl::StatusOr<std::unique_ptr<TeacherServer>> Start(
      ServedModel model, const ServerOptions& options);
  // Shutdown()s.
  ~TeacherServer();

  // The port actually bound.
  int port() const { return port_; }
  // "host:port" for clients.
  std::string address() const;
  // gRPC's resource quota in force; 0: none.
  int64_t max_transport_bytes() const { return max_transport_bytes_; }

  // Graceful stop: health turns NOT_SERVING, new calls are refused, every
  // open stream answers the batches it has read and ends, the batcher
  // drains, then the server stops. Idempotent.
  void Shutdown();

  const v1::InfoResponse& info() const { return service_->info(); }
  BatcherStats stats() const { return service_->stats(); }
  ServerMetrics& metrics() { return *metrics_; }

 private:
  TeacherServer() = default;

  std::string host_;
  int port_ = 0;
  int64_t max_transport_bytes_ = 0;
  absl::Duration drain_timeout_;
  std::unique_ptr<ServedModel> model_;
  std::unique_ptr<ServerMetrics> metrics_;
  std::unique_ptr<TeacherService> service_;
  std::unique_ptr<grpc::Server> server_;
  // Plaintext servers accept here rather than in gRPC (listener.h).
  std::unique_ptr<Listener> listener_;
  absl::Mutex shutdown_mu_;
  bool shut_down_ ABSL_GUARDED_BY(shutdown_mu_) = false;
};

}  // namespace distill::teacher

#endif  // DISTILL_TEACHER_SERVER_SERVER_H_
