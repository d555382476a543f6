// A language-model teacher's output head on the wire (proto/teacher.proto,
// OutputHead): the server cuts it into pages of rows, the client puts the
// pages back together and checks the result against the hash every page
// names. With the head, the client turns HIDDEN_FP16 answers (2 x H bytes
// per position) into the teacher's exact distribution over V classes.
// Functions are stateless; an OutputHeadAssembler belongs to one caller.
#ifndef DISTILL_TEACHER_SERVER_OUTPUT_HEAD_H_
#define DISTILL_TEACHER_SERVER_OUTPUT_HEAD_H_

#include <torch/torch.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "losses/teacher_targets.h"
#include "proto/teacher.pb.h"

namespace distill::teacher {

// The page size a request with max_bytes = 0 gets, and the most any
// request gets (a page is one copy of its rows on the server).
inline constexpr int64_t kDefaultHeadPageBytes = int64_t{1} << 20;
inline constexpr int64_t kMaxHeadPageBytes = int64_t{4} << 20;

// How many rows the page from `first_row` of a [vocab, width] head holds
// for a request of `max_bytes`: as many as fit in min(max_bytes or the
// default, kMaxHeadPageBytes) with kChunkFramingBytes, at least one.
// InvalidArgument when first_row is outside [0, vocab) or max_bytes cannot
// hold one row and the framing.
absl::StatusOr<int64_t> OutputHeadPageRows(int64_t vocab, int64_t width,
                                           int64_t first_row,
                                           int64_t max_bytes);

// The head's weight as float32 row-major bytes, then its bias's (none
// without a bias): what its hash covers and what a target store keeps.
std::string OutputHeadBytes(const losses::OutputHead& head);

// Hex SHA-256 of OutputHeadBytes(head).
absl::StatusOr<std::string> OutputHeadSha256(const losses::OutputHead& head);

// The page of OutputHeadPageRows rows from `first_row`; its errors.
absl::StatusOr<v1::OutputHeadPage> OutputHeadPageAt(
    const losses::OutputHead& head, const std::string& sha256,
    int64_t first_row, int64_t max_bytes);

// The head a client pages in, for a teacher whose Info said V classes and
// hidden width H. Every page must repeat the first page's shape, transform
// and hash, start at next_row() and hold the rows OutputHeadPageRows says
// for the request's max_bytes (so a server cannot stretch the transfer
// into a row per call); the joined head must hash to what the pages said.
class OutputHeadAssembler {
 public:
  OutputHeadAssembler(int64_t vocab_size, int64_t hidden_size);

  // The answer to a request of `max_bytes` from next_row(). InvalidArgument
  // naming what the page gets wrong.
  absl::Status Add(const v1::OutputHeadPage& page, int64_t max_bytes);
  int64_t next_row() const { return next_row_; }
  bool done() const { return next_row_ == vocab_size_; }
  // The whole head; FailedPrecondition before done(), DataLoss when its
  // bytes do not hash to the pages' sha256.
  absl::StatusOr<std::shared_ptr<const losses::OutputHead>> Finish();

 private:
  int64_t vocab_size_;
  int64_t hidden_size_;
  int64_t next_row_ = 0;
  double scale_ = 1.0;
  double softcap_ = 0.0;
  std::string sha256_;
  bool has_bias_ = false;
  std::vector<torch::Tensor> weights_;
  std::vector<torch::Tensor> biases_;
};

}  // namespace distill::teacher

#endif  // DISTILL_TEACHER_SERVER_OUTPUT_HEAD_H_
