// absl::Status <-> grpc::Status, the one conversion the service and its
// clients use: both follow google.rpc.Code, so it is a cast of the code plus
// the message. Stateless.
#ifndef DISTILL_TEACHER_SERVER_GRPC_STATUS_H_
#define DISTILL_TEACHER_SERVER_GRPC_STATUS_H_

#include <grpcpp/support/status.h>

#include <string>

#include "absl/status/status.h"

namespace distill::teacher {

inline grpc::Status ToGrpcStatus(const absl::Status& status) {
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()),
                      std::string(status.message()));
}

inline absl::Status FromGrpcStatus(const grpc::Status& status) {
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                      status.error_message());
}

}  // namespace distill::teacher

#endif  // DISTILL_TEACHER_SERVER_GRPC_STATUS_H_
