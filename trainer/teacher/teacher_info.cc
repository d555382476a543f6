#include "trainer/teacher/internal/teacher_info.h"

#include <algorithm>
#include <filesystem>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/file.h"
#include "common/status.h"
#include "teacher_server/codec.h"

namespace distill::trainer {

absl::StatusOr<std::vector<std::string>> ReadRegistry(const std::string& dir) {
  namespace fs = std::filesystem;
  std::error_code error;
  if (!fs::is_directory(dir, error)) {
    return absl::NotFoundError(
        absl::StrCat("teacher.registry_dir '", dir, "' is not a folder"));
  }
  std::vector<fs::path> files;
  for (const auto& entry : fs::directory_iterator(dir, error)) {
    if (entry.path().extension() == ".endpoint" && entry.is_regular_file()) {
      files.push_back(entry.path());
    }
  }
  std::sort(files.begin(), files.end());
  std::vector<std::string> endpoints;
  for (const auto& file : files) {
    // A server writes the file atomically, so an unreadable or empty file
    // is one that vanished between listing and opening (the server shut
    // down).
    const std::string endpoint(absl::StripAsciiWhitespace(
        ReadFile(file.string()).value_or(std::string())));
    if (!endpoint.empty()) endpoints.push_back(endpoint);
  }
  return endpoints;
}

namespace {

// A language model's identity: the tokenizer, the vocabulary, [S, V] out.
absl::Status CheckLanguageModel(const std::string& who,
                                const v1::InfoResponse& info,
                                const RemoteTeacherOptions& options) {
  const std::string data_tokenizer = options.tokenizer_sha256.substr(0, 16);
  if (info.tokenizer_sha256().empty()) {
    return absl::FailedPreconditionError(absl::StrCat(
        who,
        " does not state its tokenizer; the data's token ids come from "
        "tokenizer ",
        data_tokenizer,
        " (start the server with --tokenizer FILE, the data folder's "
        "tokenizer.model)"));
  }
  if (info.tokenizer_sha256() != options.tokenizer_sha256) {
    return absl::FailedPreconditionError(absl::StrCat(
        who, " reads token ids of tokenizer ",
        info.tokenizer_sha256().substr(0, 16),
        " but the data's come from tokenizer ", data_tokenizer,
        " (SHA-256 of each tokenizer.model): the same ids would mean other "
        "words"));
  }
  if (info.num_classes() != options.num_classes) {
    return absl::FailedPreconditionError(absl::StrCat(
        who, " has a vocabulary of ", info.num_classes(),
        " tokens but the data's tokenizer has ", options.num_classes));
  }
  const int64_t positions = options.input_shape.at(0);
  if (info.input_shape_size() != 1 || info.input_shape(0) != positions) {
    return absl::FailedPreconditionError(absl::StrCat(
        who, " takes sequences of [", absl::StrJoin(info.input_shape(), ", "),
        "] tokens but the data's windows are ", positions, " (data.seq_len)"));
  }
  if (info.output_shape_size() != 2 || info.output_shape(0) != positions ||
      info.output_shape(1) != options.num_classes) {
    return absl::FailedPreconditionError(absl::StrCat(
        who, " outputs [", absl::StrJoin(info.output_shape(), ", "),
        "] per sample; the data needs [", positions, ", ", options.num_classes,
        "] (one distribution per position)"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status CheckTeacherInfo(const std::string& address,
                              const v1::InfoResponse& info,
                              const RemoteTeacherOptions& options) {
  const std::string who =
      absl::StrCat("teacher server ", address, " ('", info.model_name(), "')");
  if (!options.tokenizer_sha256.empty()) {
    DISTILL_RETURN_IF_ERROR(CheckLanguageModel(who, info, options));
  } else if (info.num_classes() != options.num_classes) {
    return absl::FailedPreconditionError(
        absl::StrCat(who, " outputs ", info.num_classes(),
                     " classes but the data has ", options.num_classes));
  } else if (info.output_shape_size() != 1) {
    return absl::FailedPreconditionError(absl::StrCat(
        who, " outputs [", absl::StrJoin(info.output_shape(), ", "),
        "] per sample; the data needs one distribution of [",
        options.num_classes, "] per sample"));
  }
  const std::vector<int64_t> shape(info.input_shape().begin(),
                                   info.input_shape().end());
  if (shape != options.input_shape) {
    return absl::FailedPreconditionError(absl::StrCat(
        who, " takes inputs of shape [", absl::StrJoin(shape, ", "),
        "] but the data's samples are [",
        absl::StrJoin(options.input_shape, ", "), "]"));
  }
  if (info.input_dtype() != options.input_dtype) {
    return absl::FailedPreconditionError(
        absl::StrCat(who, " takes ", teacher::DTypeName(info.input_dtype()),
                     " inputs but this trainer sends ",
                     teacher::DTypeName(options.input_dtype),
                     options.input_dtype == v1::Tensor::INT32
                         ? " token ids (start it with --input_dtype int32)"
                         : ""));
  }
  const auto& offered = info.encodings();
  if (std::find(offered.begin(), offered.end(), options.encoding) ==
      offered.end()) {
    std::vector<std::string> names;
    for (int e : offered) {
      names.push_back(teacher::EncodingName(static_cast<v1::Encoding>(e)));
    }
    return absl::FailedPreconditionError(
        absl::StrCat(who, " does not offer encoding ",
                     teacher::EncodingName(options.encoding), " (offers ",
                     absl::StrJoin(names, ", "), ")"));
  }
  if (options.index_top_k > 0 && std::find(offered.begin(), offered.end(),
                                           v1::INDEX_LOGP) == offered.end()) {
    return absl::FailedPreconditionError(absl::StrCat(
        who,
        " does not answer batches with indices (INDEX_LOGP is not among its "
        "encodings), which on_policy.student_top_k needs"));
  }
  if (options.index_top_k > info.num_classes()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "on_policy.student_top_k ", options.index_top_k, " is larger than the ",
        info.num_classes(), " classes of ", who));
  }
  // Hidden states wider than the vocabulary would cost more than dense
  // answers; a claimed width beyond that is not believed.
  if (options.encoding == v1::HIDDEN_FP16 &&
      (info.hidden_size() < 1 || info.hidden_size() >= info.num_classes())) {
    return absl::FailedPreconditionError(absl::StrCat(
        who, " offers HIDDEN_FP16 with hidden_size ", info.hidden_size(),
        ", which is not in [1, ", info.num_classes(), ") (its vocabulary)"));
  }
  if (teacher::IsTopK(options.encoding) && options.top_k > info.num_classes()) {
    return absl::FailedPreconditionError(
        absl::StrCat("teacher.top_k ", options.top_k, " is larger than the ",
                     info.num_classes(), " classes of ", who));
  }
  if (info.max_batch() < options.max_batch_rows) {
    return absl::FailedPreconditionError(absl::StrCat(
        who, " accepts at most ", info.max_batch(),
        " samples per batch but this trainer sends ", options.max_batch_rows,
        options.tokenizer_sha256.empty()
            ? " (lower batch_size or raise the server's --max_batch)"
            : " (a rank's share of batch_size, or evaluation batches of "
              "4096 / seq_len windows; raise the server's --max_batch)"));
  }
  int64_t sample_bytes = 4;  // FLOAT32 and INT32 alike
  for (int64_t d : options.input_shape) sample_bytes *= d;
  // On-policy batches also carry index_top_k INT32 ids per position.
  const int64_t positions =
      options.tokenizer_sha256.empty() || options.input_shape.empty()
          ? 1
          : options.input_shape[0];
  sample_bytes += 4 * options.index_top_k * positions;
  // 1 KiB covers the request's framing and tensor headers.
  const int64_t request_bytes = options.max_batch_rows * sample_bytes + 1024;
  if (info.max_request_bytes() > 0 &&
      request_bytes > info.max_request_bytes()) {
    return absl::FailedPreconditionError(absl::StrCat(
        who, " accepts requests of at most ", info.max_request_bytes(),
        " bytes but a batch of ", options.max_batch_rows, " takes ",
        request_bytes,
        options.index_top_k > 0
            ? " with on_policy.student_top_k ids (lower it or batch_size, or "
              "raise the server's --max_index_k)"
            : " (lower batch_size)"));
  }
  return absl::OkStatus();
}

}  // namespace distill::trainer
