// Finding teacher servers and checking what they serve: the registry folder
// where servers announce themselves, and the connect-time check of a
// server's Info against the trainer's data and settings. Stateless.
#ifndef DISTILL_TRAINER_TEACHER_INTERNAL_TEACHER_INFO_H_
#define DISTILL_TRAINER_TEACHER_INTERNAL_TEACHER_INFO_H_

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "proto/teacher.pb.h"
#include "trainer/teacher/internal/remote_teacher.h"

namespace distill::trainer {

// Reads "host:port" from every `*.endpoint` file in `dir`, sorted by file
// name. NotFound when `dir` does not exist.
absl::StatusOr<std::vector<std::string>> ReadRegistry(const std::string& dir);

// Checks one server's Info against `options`; `address` names it in errors.
// FailedPrecondition naming the mismatch: class count, output shape, input
// shape or dtype, encoding, top-k, batch or request size.
absl::Status CheckTeacherInfo(const std::string& address,
                              const v1::InfoResponse& info,
                              const RemoteTeacherOptions& options);

}  // namespace distill::trainer

#endif  // DISTILL_TRAINER_TEACHER_INTERNAL_TEACHER_INFO_H_
