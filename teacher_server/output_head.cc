#include "teacher_server/output_head.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "common/file_hash.h"
#include "common/status.h"
#include "teacher_server/chunks.h"
#include "teacher_server/codec.h"

namespace distill::teacher {
namespace {

absl::string_view Bytes(const torch::Tensor& t) {
  return absl::string_view(static_cast<const char*>(t.data_ptr()),
                           t.numel() * t.element_size());
}

}  // namespace

std::string OutputHeadBytes(const losses::OutputHead& head) {
  std::string bytes(Bytes(head.weight.to(torch::kFloat).contiguous()));
  if (head.bias.defined()) {
    absl::StrAppend(&bytes, Bytes(head.bias.to(torch::kFloat).contiguous()));
  }
  return bytes;
}

absl::StatusOr<std::string> OutputHeadSha256(const losses::OutputHead& head) {
  return Sha256Hex({OutputHeadBytes(head)});
}

absl::StatusOr<int64_t> OutputHeadPageRows(int64_t vocab, int64_t width,
                                           int64_t first_row,
                                           int64_t max_bytes) {
  if (first_row < 0 || first_row >= vocab) {
    return absl::InvalidArgumentError(
        absl::StrCat("first_row must be in [0, ", vocab, "), got ", first_row));
  }
  const int64_t row_bytes = 4 * (width + 1);
  if (max_bytes < 0 ||
      (max_bytes > 0 && max_bytes < row_bytes + kChunkFramingBytes)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "max_bytes must be 0 or at least ", row_bytes + kChunkFramingBytes,
        " (one row of the head and framing), got ", max_bytes));
  }
  const int64_t budget = std::min(
      max_bytes == 0 ? kDefaultHeadPageBytes : max_bytes, kMaxHeadPageBytes);
  return std::clamp<int64_t>((budget - kChunkFramingBytes) / row_bytes, 1,
                             vocab - first_row);
}

absl::StatusOr<v1::OutputHeadPage> OutputHeadPageAt(
    const losses::OutputHead& head, const std::string& sha256,
    int64_t first_row, int64_t max_bytes) {
  const int64_t vocab = head.weight.size(0);
  const int64_t width = head.weight.size(1);
  DISTILL_ASSIGN_OR_RETURN(
      const int64_t rows,
      OutputHeadPageRows(vocab, width, first_row, max_bytes));
  v1::OutputHeadPage page;
  page.set_vocab_size(vocab);
  page.set_hidden_size(width);
  page.set_logit_scale(head.logit_scale);
  page.set_logit_softcap(head.logit_softcap);
  page.set_sha256(sha256);
  page.set_first_row(first_row);
  *page.mutable_weight() =
      ToProto(head.weight.narrow(0, first_row, rows), v1::Tensor::FLOAT32);
  if (head.bias.defined()) {
    *page.mutable_bias() =
        ToProto(head.bias.narrow(0, first_row, rows), v1::Tensor::FLOAT32);
  }
  return page;
}

OutputHeadAssembler::OutputHeadAssembler(int64_t vocab_size,
                                         int64_t hidden_size)
    : vocab_size_(vocab_size), hidden_size_(hidden_size) {}

absl::Status OutputHeadAssembler::Add(const v1::OutputHeadPage& page,
                                      int64_t max_bytes) {
  auto bad = [](const std::string& why) {
    return absl::InvalidArgumentError(
        absl::StrCat("the teacher's output head: ", why));
  };
  if (page.vocab_size() != vocab_size_ || page.hidden_size() != hidden_size_) {
    return bad(absl::StrCat("a page says [", page.vocab_size(), ", ",
                            page.hidden_size(), "] but Info said [",
                            vocab_size_, ", ", hidden_size_, "]"));
  }
  if (!std::isfinite(page.logit_scale()) || page.logit_scale() <= 0 ||
      !std::isfinite(page.logit_softcap()) || page.logit_softcap() < 0) {
    return bad(absl::StrCat("logit_scale ", page.logit_scale(),
                            " and logit_softcap ", page.logit_softcap(),
                            " must be finite, the scale > 0 and the cap >= 0"));
  }
  if (page.sha256().size() != 64) {
    return bad("sha256 is not 64 hex digits");
  }
  if (next_row_ == 0) {
    scale_ = page.logit_scale();
    softcap_ = page.logit_softcap();
    sha256_ = page.sha256();
    has_bias_ = page.has_bias();
  } else if (page.logit_scale() != scale_ || page.logit_softcap() != softcap_ ||
             page.sha256() != sha256_ || page.has_bias() != has_bias_) {
    return bad(absl::StrCat("the page from row ", page.first_row(),
                            " describes another head than the first page"));
  }
  if (page.first_row() != next_row_) {
    return bad(absl::StrCat("a page starts at row ", page.first_row(),
                            " but row ", next_row_, " was asked for"));
  }
  if (page.weight().dtype() != v1::Tensor::FLOAT32 ||
      (has_bias_ && page.bias().dtype() != v1::Tensor::FLOAT32)) {
    return bad("weight and bias must be FLOAT32");
  }
  DISTILL_ASSIGN_OR_RETURN(torch::Tensor weight,
                           FromProto(page.weight(), "weight"));
  DISTILL_ASSIGN_OR_RETURN(
      const int64_t rows,
      OutputHeadPageRows(vocab_size_, hidden_size_, next_row_, max_bytes));
  if (weight.dim() != 2 || weight.size(1) != hidden_size_ ||
      weight.size(0) != rows) {
    return bad(absl::StrCat("a page's weight is ", ShapeString(weight.sizes()),
                            "; the request from row ", next_row_, " takes [",
                            rows, ", ", hidden_size_, "]"));
  }
  torch::Tensor bias;
  if (has_bias_) {
    DISTILL_ASSIGN_OR_RETURN(bias, FromProto(page.bias(), "bias"));
    if (bias.dim() != 1 || bias.size(0) != weight.size(0)) {
      return bad(absl::StrCat("a page's bias is ", ShapeString(bias.sizes()),
                              " for ", weight.size(0), " rows"));
    }
  }
  if (!torch::isfinite(weight).all().item<bool>() ||
      (bias.defined() && !torch::isfinite(bias).all().item<bool>())) {
    return bad(absl::StrCat("the page from row ", next_row_,
                            " holds a number that is not finite"));
  }
  next_row_ += weight.size(0);
  weights_.push_back(std::move(weight));
  if (bias.defined()) biases_.push_back(std::move(bias));
  return absl::OkStatus();
}

absl::StatusOr<std::shared_ptr<const losses::OutputHead>>
OutputHeadAssembler::Finish() {
  if (!done()) {
    return absl::FailedPreconditionError(
        absl::StrCat("the teacher's output head has ", next_row_, " of ",
                     vocab_size_, " rows"));
  }
  auto head = std::make_shared<losses::OutputHead>();
  head->weight = torch::cat(weights_, 0);
  if (has_bias_) head->bias = torch::cat(biases_, 0);
  head->logit_scale = scale_;
  head->logit_softcap = softcap_;
  weights_.clear();
  biases_.clear();
  DISTILL_ASSIGN_OR_RETURN(const std::string sha, OutputHeadSha256(*head));
  if (sha != sha256_) {
    return absl::DataLossError(absl::StrCat(
        "the teacher's output head hashes to ", sha, ", not to ", sha256_,
        " as its pages say: it changed or was damaged on the way"));
  }
  return std::shared_ptr<const losses::OutputHead>(std::move(head));
}

}  // namespace distill::teacher
