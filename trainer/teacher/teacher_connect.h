// Builds the TeacherClient for a job whose `teacher` names teacher servers:
// reads the token and CA files, connects (RemoteTeacher) and, when the
// config asks for it, wraps the client in a target cache. Stateless.
#ifndef DISTILL_TRAINER_TEACHER_TEACHER_CONNECT_H_
#define DISTILL_TRAINER_TEACHER_TEACHER_CONNECT_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "proto/job.pb.h"
#include "student/zoo.h"
#include "trainer/teacher/teacher_client.h"

namespace distill::trainer {

// `data` describes one sample and the class count; `tokenizer_sha256` is
// the token data's tokenizer (hex SHA-256; empty for images), which a
// language-model teacher must state in Info; `batch_rows` is the largest
// batch this rank sends; sample ids are in [0, num_samples).
absl::StatusOr<std::shared_ptr<TeacherClient>> ConnectRemoteTeacher(
    const v1::JobConfig& config, const student::ZooInput& data,
    const std::string& tokenizer_sha256, int64_t batch_rows,
    int64_t num_samples, int rank);

}  // namespace distill::trainer

#endif  // DISTILL_TRAINER_TEACHER_TEACHER_CONNECT_H_
