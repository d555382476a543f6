// Asks a teacher server whether it is ready, by the standard gRPC health
// checking protocol (grpc.health.v1.Health/Check). Thread-safe.
#ifndef DISTILL_LAUNCH_HEALTH_H_
#define DISTILL_LAUNCH_HEALTH_H_

#include <string>

#include "absl/status/status.h"
#include "absl/time/time.h"

namespace distill::launch {

// How to reach the server. Default: plaintext, no token.
struct HealthCheckSecurity {
  // PEM root certificates; set, the check connects with TLS and verifies
  // the server's certificate against them and the endpoint's host name.
  std::string tls_ca_pem;
  // Sent as `authorization: Bearer <token>` when set.
  std::string token;
};

// OK when `service` at `endpoint` ("host:port") reports SERVING within
// `timeout`; Unavailable (connection refused, a TLS handshake that failed,
// deadline passed) or FailedPrecondition (another serving status)
// otherwise, naming the endpoint.
absl::Status CheckServing(const std::string& endpoint,
                          const std::string& service, absl::Duration timeout,
                          const HealthCheckSecurity& security = {});

}  // namespace distill::launch

#endif  // DISTILL_LAUNCH_HEALTH_H_
