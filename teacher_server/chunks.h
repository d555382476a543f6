// Answers in chunks: a batch's targets split into several DistillResponse
// messages, each under the size the client's stream header asks for, and
// put back together on the client (proto/teacher.proto, DistillResponse).
// A language model's dense answer is 4 x V bytes per position (128 KB at
// V = 32,000): one batch passes gRPC's 4 MiB default after 32 positions,
// and a client that lifted its limit instead takes answers of any size.
// Works on the messages alone (no tensors); safe from any thread.
#ifndef DISTILL_TEACHER_SERVER_CHUNKS_H_
#define DISTILL_TEACHER_SERVER_CHUNKS_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "proto/teacher.pb.h"

namespace distill::teacher {

// What a chunk message may take beyond its rows' bytes: the batch id,
// chunk fields, shapes and scalar fields of SoftTargets.
inline constexpr int64_t kChunkFramingBytes = 4096;

// The most bytes one row (one sample's or one position's distribution)
// takes on the wire in `encoding` over `num_classes` classes; `width` is
// TOP_K's k, SAMPLED's draws per row, HIDDEN_FP16's hidden width or
// INDEX_LOGP's indices per row.
int64_t RowBytes(v1::Encoding encoding, int64_t num_classes, int32_t width);

// How many rows (a sample's or a position's distribution) `targets` holds:
// the product of its leading dimensions; 0 for a malformed message.
int64_t AnswerRows(const v1::SoftTargets& targets);

// The messages that carry `targets` as the answer to `batch_id`: one (with
// chunks = 0) when `max_bytes` is 0 or the whole answer fits in it, else
// chunks of whole rows, each at most `max_bytes`. InvalidArgument when one
// row and its framing do not fit in `max_bytes`.
absl::StatusOr<std::vector<v1::DistillResponse>> SplitAnswer(
    uint64_t batch_id, const v1::SoftTargets& targets, int64_t max_bytes);

// The one answer that `chunks` (every chunk of one batch, in the order
// received) make up; InvalidArgument naming the inconsistency when a chunk
// is missing, out of order, duplicated, of another batch, or disagrees with
// the others on a shape, dtype or scalar field. The reassembled targets
// still go through DecodeTargets.
absl::StatusOr<v1::DistillResponse> JoinAnswer(
    const std::vector<v1::DistillResponse>& chunks);

}  // namespace distill::teacher

#endif  // DISTILL_TEACHER_SERVER_CHUNKS_H_
