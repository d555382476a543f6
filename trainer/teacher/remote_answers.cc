// RemoteTeacher's answer checks: an answer is decoded only when its
// encoding, temperature and class count are the ones asked for, and its
// tensors have the batch's rows; anything else is DataLoss naming the
// server and the batch.
#include <cmath>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "teacher_server/codec.h"
#include "teacher_server/grpc_status.h"
#include "trainer/teacher/internal/remote_state.h"

namespace distill::trainer {

using remote::Endpoint;
using remote::Pending;
using remote::Result;

namespace remote {

std::string Describe(const grpc::Status& status) {
  return teacher::FromGrpcStatus(status).ToString();
}

bool Retryable(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::UNAVAILABLE:
    case grpc::StatusCode::CANCELLED:
    case grpc::StatusCode::DEADLINE_EXCEEDED:
    case grpc::StatusCode::INTERNAL:
    case grpc::StatusCode::UNKNOWN:
    case grpc::StatusCode::ABORTED:
      return true;
    default:
      return false;
  }
}

}  // namespace remote

Result RemoteTeacher::Impl::Decode(const Endpoint& endpoint,
                                   const Pending& pending,
                                   const v1::DistillResponse& response) const {
  const v1::SoftTargets& targets = response.targets();
  auto bad = [&](const std::string& what) {
    return absl::DataLossError(absl::StrCat("teacher server ", endpoint.address,
                                            " answered batch ", pending.id,
                                            " with bad targets: ", what));
  };
  // A batch that sent class ids is answered at them, whatever the stream's
  // encoding.
  const v1::Encoding want_encoding =
      pending.indices.defined() ? v1::INDEX_LOGP : options_.encoding;
  if (targets.encoding() != want_encoding) {
    return bad(
        absl::StrCat("encoding ", teacher::EncodingName(targets.encoding()),
                     " instead of ", teacher::EncodingName(want_encoding)));
  }
  if (std::abs(targets.temperature() - pending.temperature) >
      1e-9 * pending.temperature) {
    return bad(absl::StrCat("temperature ", targets.temperature(),
                            " instead of ", pending.temperature));
  }
  if (targets.num_classes() != options_.num_classes) {
    return bad(absl::StrCat(targets.num_classes(), " classes instead of ",
                            options_.num_classes));
  }
  // The width the stream asked for: a server that answers with another k
  // or m would break the batches' concatenation and the cache.
  if (want_encoding == v1::SAMPLED && targets.samples() != options_.samples) {
    return bad(absl::StrCat(targets.samples(), " samples per row instead of ",
                            options_.samples));
  }
  if (teacher::IsTopK(want_encoding) &&
      teacher::TopKWidth(targets) != options_.top_k) {
    return bad(
        absl::StrCat("top-k answers with k = ", teacher::TopKWidth(targets),
                     " instead of ", options_.top_k, " per row"));
  }
  Result decoded =
      teacher::DecodeTargets(targets, pending.rows, head_, pending.indices);
  if (!decoded.ok()) return bad(std::string(decoded.status().message()));
  // One distribution per sample, or per position of a token sequence:
  // targets of another rank would fail deep in the loss or the cache.
  const std::vector<int64_t> want =
      pending.positions > 0
          ? std::vector<int64_t>{pending.rows, pending.positions}
          : std::vector<int64_t>{pending.rows};
  if (decoded->batch_shape() != torch::IntArrayRef(want)) {
    return bad(absl::StrCat("targets for [",
                            absl::StrJoin(decoded->batch_shape(), ", "),
                            "] instead of [", absl::StrJoin(want, ", "), "]"));
  }
  return decoded;
}

}  // namespace distill::trainer
