#include "trainer/teacher/internal/teacher_info.h"

#include <algorithm>
#include <filesystem>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/file.h"
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

absl::Status CheckTeacherInfo(const std::string& address,
                              const v1::InfoResponse& info,
                              const RemoteTeacherOptions& options) {
  const std::string who =
      absl::StrCat("teacher server ", address, " ('", info.model_name(), "')");
  if (info.num_classes() != options.num_classes) {
    return absl::FailedPreconditionError(
        absl::StrCat(who, " outputs ", info.num_classes(),
                     " classes but the data has ", options.num_classes));
  }
  if (info.output_shape_size() != 1) {
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
  if (info.input_dtype() != v1::Tensor::FLOAT32) {
    return absl::FailedPreconditionError(
        absl::StrCat(who, " takes ", teacher::DTypeName(info.input_dtype()),
                     " inputs but the data's are FLOAT32"));
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
  if (options.encoding == v1::TOP_K && options.top_k > info.num_classes()) {
    return absl::FailedPreconditionError(
        absl::StrCat("teacher.top_k ", options.top_k, " is larger than the ",
                     info.num_classes(), " classes of ", who));
  }
  if (info.max_batch() < options.max_batch_rows) {
    return absl::FailedPreconditionError(absl::StrCat(
        who, " accepts at most ", info.max_batch(),
        " samples per batch but this trainer sends ", options.max_batch_rows,
        " (lower batch_size or raise the server's --max_batch)"));
  }
  int64_t sample_bytes = 4;
  for (int64_t d : options.input_shape) sample_bytes *= d;
  // 1 KiB covers the request's framing and tensor header.
  const int64_t request_bytes = options.max_batch_rows * sample_bytes + 1024;
  if (info.max_request_bytes() > 0 &&
      request_bytes > info.max_request_bytes()) {
    return absl::FailedPreconditionError(absl::StrCat(
        who, " accepts requests of at most ", info.max_request_bytes(),
        " bytes but a batch of ", options.max_batch_rows, " takes ",
        request_bytes, " (lower batch_size)"));
  }
  return absl::OkStatus();
}

}  // namespace distill::trainer
