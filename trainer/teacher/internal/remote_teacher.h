// The gRPC client of teacher servers (proto/teacher.proto): a TeacherClient
// that checks every endpoint's Info against the data at connect time, keeps
// one Distill stream per endpoint (and temperature), sends each batch to the
// endpoint with the fewest outstanding samples, and, when a stream breaks,
// resends its unanswered batches elsewhere while reconnecting in the
// background. Answers are matched to batches by batch id and checked for
// size, so every batch's future gets its own targets exactly once. When no
// endpoint has answered for `failover_grace_seconds` while work waits, every
// waiting future fails with UNAVAILABLE naming the endpoints and their last
// errors. A server that leaves a batch unanswered for
// `answer_timeout_seconds` while its connection stays open is treated as
// failed the same way. Submit/Targets/TakeStats may be called from any
// thread; the client runs one reader thread per stream and one supervisor
// thread. Built from a job config by ConnectRemoteTeacher (teacher_connect.h).
#ifndef DISTILL_TRAINER_TEACHER_INTERNAL_REMOTE_TEACHER_H_
#define DISTILL_TRAINER_TEACHER_INTERNAL_REMOTE_TEACHER_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "proto/teacher.pb.h"
#include "trainer/teacher/teacher_client.h"

namespace distill::trainer {

// Every value comes from the job config's `teacher` section, which holds
// the defaults (trainer/config_defaults.cc); the zero values here are not
// usable settings.
struct RemoteTeacherOptions {
  // "host:port" of each server. At least one of these and registry_dir.
  std::vector<std::string> endpoints;
  // A folder of `*.endpoint` files holding "host:port" (written by
  // `teacher_server --registry_dir`); read at connect time and rescanned
  // while reconnecting. Empty: none.
  std::string registry_dir;
  // Required.
  v1::Encoding encoding = v1::ENCODING_UNSPECIFIED;
  // TOP_K only, >= 1.
  int32_t top_k = 0;
  // SAMPLED only, in [1, 255].
  int32_t samples = 0;
  // The most class ids per row a batch may carry (data::Batch's
  // teacher_indices, answered as INDEX_LOGP whatever `encoding` is); every
  // server must offer INDEX_LOGP. 0: batches carry none.
  int64_t index_top_k = 0;
  // Deadline of each Info call, > 0.
  double connect_timeout_seconds = 0;
  // > 0.
  double failover_grace_seconds = 0;
  // > 0.
  double answer_timeout_seconds = 0;
  // Sent as `authorization: Bearer <token>` on every call. Empty: none.
  std::string token;
  // PEM root certificates; non-empty connects with TLS. Empty: plaintext.
  std::string tls_ca_pem;
  // What the data gives the teacher: one sample's shape and dtype (FLOAT32
  // images; INT32 token ids [S]), the class count (a language model's
  // vocabulary size), and the largest batch this client will send.
  std::vector<int64_t> input_shape;
  v1::Tensor::DType input_dtype = v1::Tensor::FLOAT32;
  int64_t num_classes = 0;
  int64_t max_batch_rows = 0;
  // Token data: hex SHA-256 of the tokenizer its ids come from; a teacher
  // must state the same one. Empty for images.
  std::string tokenizer_sha256;
  // The largest answer message taken (gRPC's receive limit, plus framing);
  // servers send larger answers in chunks under it. 0: no limit, whole
  // answers.
  int64_t max_answer_bytes = 0;
  // Sends of one batch before its future fails with UNAVAILABLE, >= 1.
  int max_attempts = 5;
};

class RemoteTeacher final : public TeacherClient {
 public:
  // Calls Info on every endpoint (in parallel) and checks it against the
  // options: FailedPrecondition naming the endpoint when its class count,
  // input shape or dtype, encodings, top-k, batch limit or model (another
  // endpoint's hash) do not fit; UNAUTHENTICATED/PERMISSION_DENIED as the
  // server said; UNAVAILABLE when no endpoint answered. Endpoints that did
  // not answer are retried in the background.
  static absl::StatusOr<std::unique_ptr<RemoteTeacher>> Connect(
      const RemoteTeacherOptions& options);
  ~RemoteTeacher() override;

  absl::StatusOr<losses::TeacherTargets> Targets(const data::Batch& batch,
                                                 double temperature) override;
  TargetsFuture Submit(const data::Batch& batch, double temperature) override;
  bool asynchronous() const override { return true; }
  // When on_policy.student_top_k had every server checked for INDEX_LOGP,
  // or the first one offered it.
  bool scores_at_indices() const override;
  // teacher_batches, teacher_samples, teacher_latency_ms_mean/_p95,
  // teacher_resent_batches, teacher_endpoint_failures,
  // teacher_endpoints_up (now) and, for top-k,
  // teacher_topk_mass_mean (mean of 1 - tail mass).
  nlohmann::json TakeStats() override;
  int64_t num_classes() const override;
  std::string description() const override;
  // The servers' model hash (from Info), which keys target caches.
  std::string model_hash() const override;
  int64_t hidden_size() const override;

  class Impl;

 private:
  explicit RemoteTeacher(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace distill::trainer

#endif  // DISTILL_TRAINER_TEACHER_INTERNAL_REMOTE_TEACHER_H_
