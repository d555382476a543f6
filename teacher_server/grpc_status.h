// absl::Status -> grpc::Status: both follow google.rpc.Code, so the
// conversion is a cast of the code plus the message.
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

}  // namespace distill::teacher

#endif  // DISTILL_TEACHER_SERVER_GRPC_STATUS_H_
