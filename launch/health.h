// Asks a teacher server whether it is ready, by the standard gRPC health
// checking protocol (grpc.health.v1.Health/Check). Thread-safe.
#ifndef DISTILL_LAUNCH_HEALTH_H_
#define DISTILL_LAUNCH_HEALTH_H_

#include <string>

#include "absl/status/status.h"
#include "absl/time/time.h"

namespace distill::launch {

// OK when `service` at `endpoint` ("host:port", plaintext) reports SERVING
// within `timeout`; Unavailable (connection refused, deadline passed) or
// FailedPrecondition (another serving status) otherwise, naming the
// endpoint.
absl::Status CheckServing(const std::string& endpoint,
                          const std::string& service, absl::Duration timeout);

}  // namespace distill::launch

#endif  // DISTILL_LAUNCH_HEALTH_H_
