#include "trainer/teacher/teacher_connect.h"

#include <filesystem>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "common/file.h"
#include "common/status.h"
#include "trainer/teacher/internal/remote_teacher.h"
#include "trainer/teacher/internal/teacher_cache.h"

namespace distill::trainer {
namespace {

absl::StatusOr<std::string> ReadSmallFile(const std::string& path,
                                          const std::string& field) {
  absl::StatusOr<std::string> text = ReadFile(path);
  if (!text.ok()) {
    return absl::NotFoundError(
        absl::StrCat(field, " '", path, "' cannot be read"));
  }
  return text;
}

}  // namespace

absl::StatusOr<std::shared_ptr<TeacherClient>> ConnectRemoteTeacher(
    const v1::JobConfig& config, const student::ZooInput& data,
    const std::string& tokenizer_sha256, int64_t batch_rows,
    int64_t num_samples, int rank) {
  const v1::TeacherConfig& t = config.teacher();
  RemoteTeacherOptions options;
  options.endpoints.assign(t.endpoints().begin(), t.endpoints().end());
  options.registry_dir = t.registry_dir();
  // TeacherConfig.Encoding mirrors teacher.proto's Encoding value for value.
  options.encoding = static_cast<v1::Encoding>(t.encoding());
  options.top_k = t.top_k();
  options.samples = t.samples();
  if (config.has_on_policy() && config.on_policy().fraction() > 0) {
    options.index_top_k = config.on_policy().student_top_k();
  }
  options.connect_timeout_seconds = t.connect_timeout_seconds();
  options.failover_grace_seconds = t.failover_grace_seconds();
  options.answer_timeout_seconds = t.answer_timeout_seconds();
  options.max_answer_bytes = t.max_answer_bytes();
  options.max_attempts = t.max_attempts();
  if (!t.token_file().empty()) {
    DISTILL_ASSIGN_OR_RETURN(
        std::string token, ReadSmallFile(t.token_file(), "teacher.token_file"));
    options.token = std::string(absl::StripAsciiWhitespace(token));
    if (options.token.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("teacher.token_file '", t.token_file(), "' is empty"));
    }
  }
  if (!t.tls_ca_file().empty()) {
    DISTILL_ASSIGN_OR_RETURN(
        options.tls_ca_pem,
        ReadSmallFile(t.tls_ca_file(), "teacher.tls_ca_file"));
  }
  options.input_shape = data.input_shape;
  options.num_classes = data.num_classes;
  if (data.tokens) {
    if (tokenizer_sha256.empty()) {
      return absl::FailedPreconditionError(
          "token data without its tokenizer's SHA-256 cannot be checked "
          "against a teacher server");
    }
    // Ids below 65,536 (distill_prepare_text's limit) fit INT32.
    options.input_dtype = v1::Tensor::INT32;
    options.tokenizer_sha256 = tokenizer_sha256;
  }
  options.max_batch_rows = batch_rows;
  DISTILL_ASSIGN_OR_RETURN(std::unique_ptr<RemoteTeacher> remote,
                           RemoteTeacher::Connect(options));
  const v1::TeacherCacheConfig& cache = t.cache();
  if (cache.mode() != v1::TeacherCacheConfig::MEMORY &&
      cache.mode() != v1::TeacherCacheConfig::DISK) {
    return std::shared_ptr<TeacherClient>(std::move(remote));
  }
  TeacherCacheKey key;
  key.model_hash = remote->model_hash();
  key.temperature = config.temperature();
  key.encoding = options.encoding;
  key.top_k = options.top_k;
  key.samples = options.samples;
  key.num_classes = data.num_classes;
  std::string file;
  if (cache.mode() == v1::TeacherCacheConfig::DISK) {
    const std::filesystem::path dir =
        cache.dir().empty()
            ? std::filesystem::path(config.run_dir()) / "teacher_cache"
            : std::filesystem::path(cache.dir());
    file = (dir / absl::StrCat("targets-rank", rank, ".bin")).string();
  }
  DISTILL_ASSIGN_OR_RETURN(
      std::unique_ptr<CachingTeacher> cached,
      CachingTeacher::Create(std::move(remote), key, num_samples, file));
  return std::shared_ptr<TeacherClient>(std::move(cached));
}

}  // namespace distill::trainer
