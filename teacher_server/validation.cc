#include "teacher_server/validation.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status.h"
#include "common/temperature.h"
#include "teacher_server/chunks.h"
#include "teacher_server/codec.h"
#include "teacher_server/served_model.h"

namespace distill::teacher {
absl::Status ValidateHeader(const v1::StreamHeader& header,
                            const v1::InfoResponse& info) {
  if (!std::isfinite(header.temperature()) ||
      !(header.temperature() >= kMinTemperature)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "header.temperature must be a finite number >= ", kMinTemperature,
        " (smaller ones overflow z / T), got ", header.temperature()));
  }
  const auto& encodings = info.encodings();
  if (std::find(encodings.begin(), encodings.end(), header.encoding()) ==
      encodings.end()) {
    std::vector<std::string> names;
    for (int e : encodings)
      names.push_back(EncodingName(static_cast<v1::Encoding>(e)));
    return absl::InvalidArgumentError(absl::StrCat(
        "header.encoding ", EncodingName(header.encoding()),
        " is not supported; supported: ", absl::StrJoin(names, ", ")));
  }
  if (IsTopK(header.encoding()) &&
      (header.top_k() < 1 || header.top_k() > info.num_classes())) {
    return absl::InvalidArgumentError(
        absl::StrCat("header.top_k must be in [1, ", info.num_classes(),
                     "] (the teacher's classes), got ", header.top_k()));
  }
  if (header.encoding() == v1::SAMPLED &&
      (header.samples() < 1 || header.samples() > kMaxSamples)) {
    return absl::InvalidArgumentError(
        absl::StrCat("header.samples must be in [1, ", kMaxSamples,
                     "] with encoding SAMPLED, got ", header.samples()));
  }
  const int64_t row =
      RowBytes(header.encoding(), info.num_classes(),
               header.encoding() == v1::SAMPLED       ? header.samples()
               : header.encoding() == v1::HIDDEN_FP16 ? info.hidden_size()
                                                      : header.top_k()) +
      kChunkFramingBytes;
  if (header.max_answer_bytes() < 0 ||
      (header.max_answer_bytes() > 0 && header.max_answer_bytes() < row)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "header.max_answer_bytes must be 0 (no limit) or at least ", row,
        " (one row of this encoding and ", kChunkFramingBytes,
        " bytes of framing), got ", header.max_answer_bytes()));
  }
  return absl::OkStatus();
}

absl::StatusOr<torch::Tensor> DecodeInputs(const v1::InputBatch& batch,
                                           const v1::InfoResponse& info) {
  const v1::Tensor& inputs = batch.inputs();
  if (inputs.dtype() != info.input_dtype()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "batch ", batch.batch_id(), ": inputs must be ",
        DTypeName(info.input_dtype()), ", got ", DTypeName(inputs.dtype())));
  }
  std::vector<int64_t> want = {-1};
  want.insert(want.end(), info.input_shape().begin(), info.input_shape().end());
  const bool shape_ok =
      inputs.shape_size() == static_cast<int>(want.size()) &&
      std::equal(want.begin() + 1, want.end(), inputs.shape().begin() + 1);
  if (!shape_ok) {
    return absl::InvalidArgumentError(
        absl::StrCat("batch ", batch.batch_id(), ": inputs shape ",
                     ShapeString(inputs.shape()), " must be [N, ",
                     absl::StrJoin(info.input_shape(), ", "), "]"));
  }
  const int64_t n = inputs.shape(0);
  if (n < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("batch ", batch.batch_id(), " is empty"));
  }
  if (n > info.max_batch()) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "batch ", batch.batch_id(), " has ", n,
        " samples; the most one batch may carry is ", info.max_batch()));
  }
  absl::StatusOr<torch::Tensor> tensor = FromProto(inputs, "inputs");
  if (!tensor.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "batch ", batch.batch_id(), ": ", tensor.status().message()));
  }
  // Token ids index the teacher's embedding: one outside the vocabulary
  // would fail the forward it shares with other streams' batches.
  if (TakesTokens(info.input_dtype()) && tensor->numel() > 0) {
    const int64_t low = tensor->min().item<int64_t>();
    const int64_t high = tensor->max().item<int64_t>();
    if (low < 0 || high >= info.num_classes()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "batch ", batch.batch_id(), ": token id ", low < 0 ? low : high,
          " is outside the teacher's vocabulary [0, ", info.num_classes(),
          ")"));
    }
  }
  return tensor;
}

absl::StatusOr<torch::Tensor> DecodeIndices(const v1::InputBatch& batch,
                                            const v1::InfoResponse& info,
                                            const v1::StreamHeader& header,
                                            int64_t rows, int64_t max_k) {
  const uint64_t id = batch.batch_id();
  if (!batch.has_indices()) {
    if (header.encoding() == v1::INDEX_LOGP) {
      return absl::InvalidArgumentError(absl::StrCat(
          "batch ", id,
          " carries no indices; a stream with encoding INDEX_LOGP must send "
          "them with every batch"));
    }
    return torch::Tensor();
  }
  const v1::Tensor& message = batch.indices();
  const int64_t classes = info.num_classes();
  std::vector<int64_t> want = {rows};
  want.insert(want.end(), info.output_shape().begin(),
              info.output_shape().end() - 1);
  const std::string shape = absl::StrCat("[", absl::StrJoin(want, ", "),
                                         want.empty() ? "" : ", ", "k]");
  if (message.dtype() != v1::Tensor::INT32) {
    return absl::InvalidArgumentError(
        absl::StrCat("batch ", id, ": indices must be INT32, got ",
                     DTypeName(message.dtype())));
  }
  if (message.shape_size() != static_cast<int>(want.size()) + 1 ||
      !std::equal(want.begin(), want.end(), message.shape().begin())) {
    return absl::InvalidArgumentError(
        absl::StrCat("batch ", id, ": indices shape ",
                     ShapeString(message.shape()), " must be ", shape));
  }
  const int64_t k = message.shape(message.shape_size() - 1);
  const int64_t most = std::min(classes, max_k);
  if (k < 1 || k > most) {
    return absl::InvalidArgumentError(absl::StrCat(
        "batch ", id, ": indices per row must be in [1, ", most, "] (",
        most == classes ? "the teacher's classes"
                        : "the server's --max_index_k",
        "), got ", k));
  }
  const int64_t row =
      RowBytes(v1::INDEX_LOGP, classes, static_cast<int32_t>(k)) +
      kChunkFramingBytes;
  if (header.max_answer_bytes() > 0 && header.max_answer_bytes() < row) {
    return absl::InvalidArgumentError(absl::StrCat(
        "batch ", id, ": ", k, " indices per row need answers of ", row,
        " bytes per row with framing; the stream's max_answer_bytes is ",
        header.max_answer_bytes()));
  }
  absl::StatusOr<torch::Tensor> tensor = FromProto(message, "indices");
  if (!tensor.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("batch ", id, ": ", tensor.status().message()));
  }
  torch::Tensor ids = tensor->to(torch::kLong);
  if (ids.numel() > 0 &&
      (ids.min().item<int64_t>() < 0 || ids.max().item<int64_t>() >= classes)) {
    const int64_t bad = ids.min().item<int64_t>() < 0
                            ? ids.min().item<int64_t>()
                            : ids.max().item<int64_t>();
    return absl::InvalidArgumentError(
        absl::StrCat("batch ", id, ": index ", bad,
                     " is outside the teacher's classes [0, ", classes, ")"));
  }
  if (k > 1) {
    const torch::Tensor sorted = std::get<0>(ids.sort(-1));
    if ((sorted.narrow(-1, 1, k - 1) == sorted.narrow(-1, 0, k - 1))
            .any()
            .item<bool>()) {
      return absl::InvalidArgumentError(
          absl::StrCat("batch ", id,
                       ": indices name a class twice within a row; each row "
                       "must list distinct classes"));
    }
  }
  return ids;
}

}  // namespace distill::teacher
