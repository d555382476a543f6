// A token job and its offline target store: the key the job expects, opening
// the store as the job's teacher, and `distill --write_target_store`, which
// runs the job's teacher once over every training window.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <deque>
#include <filesystem>
#include <numeric>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/file_hash.h"
#include "common/status.h"
#include "data/token_windows.h"
#include "trainer/internal/job.h"
#include "trainer/teacher/target_store.h"
#include "trainer/trainer.h"

namespace distill::trainer {
namespace {

// The teacher's model files' SHA-256 (an ensemble's joined by ','), or
// empty when the config runs no model here.
absl::StatusOr<std::string> ConfiguredTeacherHash(
    const v1::TeacherConfig& teacher) {
  if (!teacher.has_model()) return std::string();
  std::vector<const v1::ModelConfig*> models = {&teacher.model()};
  for (const v1::ModelConfig& m : teacher.ensemble()) models.push_back(&m);
  std::vector<std::string> hashes;
  for (const v1::ModelConfig* m : models) {
    const std::string& file =
        m->torchscript().empty() ? m->weights() : m->torchscript();
    DISTILL_ASSIGN_OR_RETURN(std::string hash, FileSha256Hex(file));
    hashes.push_back(std::move(hash));
  }
  return absl::StrJoin(hashes, ",");
}

}  // namespace

absl::StatusOr<TargetStoreKey> JobTargetStoreKey(const JobConfig& config,
                                                 const data::Dataset& train) {
  const auto& windows = static_cast<const data::TokenWindows&>(train);
  const v1::TeacherConfig& t = config.teacher();
  TargetStoreKey key;
  DISTILL_ASSIGN_OR_RETURN(key.teacher_sha256, ConfiguredTeacherHash(t));
  key.tokenizer_sha256 = windows.file().info().tokenizer_sha256;
  DISTILL_ASSIGN_OR_RETURN(key.train_tokens_sha256,
                           FileSha256Hex(windows.file().path()));
  key.temperature = config.temperature();
  key.encoding = static_cast<v1::Encoding>(t.encoding());
  key.top_k = t.top_k();
  key.samples = t.samples();
  key.vocab_size = windows.num_classes();
  key.seq_len = config.data().seq_len();
  key.stride = config.data().stride();
  key.windows = train.size();
  return key;
}

absl::StatusOr<std::shared_ptr<TeacherClient>> OpenJobTargetStore(
    const JobConfig& config, const data::Dataset& train) {
  DISTILL_ASSIGN_OR_RETURN(const TargetStoreKey key,
                           JobTargetStoreKey(config, train));
  DISTILL_ASSIGN_OR_RETURN(
      std::unique_ptr<StoreTeacher> store,
      StoreTeacher::Open(config.teacher().store_dir(), key));
  return std::shared_ptr<TeacherClient>(std::move(store));
}

absl::StatusOr<nlohmann::json> WriteTargetStore(const JobConfig& config,
                                                bool verbose) {
  const v1::TeacherConfig& t = config.teacher();
  const std::string& dir = t.store_dir();
  if (config.mode() != JobConfig::DISTILL || dir.empty()) {
    return absl::InvalidArgumentError(
        "--write_target_store needs a mode DISTILL job whose teacher sets "
        "store_dir");
  }
  if (!t.has_model() && !IsRemoteTeacher(t)) {
    return absl::InvalidArgumentError(
        "--write_target_store runs the teacher: set teacher.model (run here) "
        "or teacher.endpoints/registry_dir (teacher servers) beside "
        "teacher.store_dir");
  }
  UseConfiguredThreadsAndSeed(config);

  DISTILL_ASSIGN_OR_RETURN(const std::unique_ptr<data::Dataset> train,
                           LoadTokenSplit(config, data::TokenSplit::kTrain));
  DISTILL_ASSIGN_OR_RETURN(const std::unique_ptr<data::Dataset> test,
                           LoadTokenSplit(config, data::TokenSplit::kTest));
  DISTILL_ASSIGN_OR_RETURN(TargetStoreKey key,
                           JobTargetStoreKey(config, *train));
  std::error_code ec;
  if (std::filesystem::exists(dir, ec)) {
    auto stored = ReadTargetStoreKey(dir);
    if (!stored.ok()) {
      return absl::AlreadyExistsError(absl::StrCat(
          "target store ", dir, " already exists and is not usable (",
          stored.status().message(),
          "); remove it or choose another teacher.store_dir"));
    }
    // A server's model hash is known only once connected: without
    // teacher.model the rest of the key decides.
    const std::string difference = TargetStoreKeyDifference(*stored, key);
    if (!difference.empty()) {
      return absl::AlreadyExistsError(absl::StrCat(
          "target store ", dir, " already exists, written for another job (",
          difference, "); remove it or choose another teacher.store_dir"));
    }
    if (verbose) {
      std::printf("target store %s is already written for this job\n",
                  dir.c_str());
    }
    return nlohmann::json{{"store", dir}, {"written", false}};
  }

  const student::ZooInput input{test->input_shape(), test->num_classes(),
                                /*tokens=*/true};
  DISTILL_ASSIGN_OR_RETURN(
      const std::shared_ptr<TeacherClient> teacher,
      MakeJobTeacher(config, WorldInfo{}, input, *test, train.get(),
                     /*read_store=*/false));
  DISTILL_RETURN_IF_ERROR(CheckTeacherClasses(*teacher, key.vocab_size));
  if (key.teacher_sha256.empty()) key.teacher_sha256 = teacher->model_hash();
  if (key.encoding == v1::HIDDEN_FP16) key.hidden_size = teacher->hidden_size();
  TargetStoreWriterOptions options;
  options.teacher_description = teacher->description();
  DISTILL_ASSIGN_OR_RETURN(std::unique_ptr<TargetStoreWriter> writer,
                           TargetStoreWriter::Create(dir, key, options));

  const auto start = std::chrono::steady_clock::now();
  const int64_t windows = train->size();
  const int64_t batch = config.batch_size();
  const size_t ahead = static_cast<size_t>(t.prefetch_batches()) + 1;
  std::deque<TargetsFuture> pending;
  int64_t next = 0, done = 0, reported = 0;
  while (done < windows) {
    while (next < windows && pending.size() < ahead) {
      std::vector<int64_t> ids(std::min(batch, windows - next));
      std::iota(ids.begin(), ids.end(), next);
      DISTILL_ASSIGN_OR_RETURN(data::Batch b, train->Get(ids));
      pending.push_back(teacher->Submit(b, config.temperature()));
      next += static_cast<int64_t>(ids.size());
    }
    absl::StatusOr<losses::TeacherTargets> targets = pending.front().get();
    pending.pop_front();
    DISTILL_RETURN_IF_ERROR(
        Annotate(targets.status(), "teacher targets for the target store"));
    DISTILL_RETURN_IF_ERROR(writer->Append(*targets));
    done += targets->batch_size();
    if (verbose && (done - reported) * 10 >= windows) {
      reported = done;
      const double s = std::chrono::duration<double>(
                           std::chrono::steady_clock::now() - start)
                           .count();
      std::printf("target store: %lld/%lld windows, %.0f tokens/s\n",
                  static_cast<long long>(done), static_cast<long long>(windows),
                  done * key.seq_len / std::max(s, 1e-9));
      std::fflush(stdout);
    }
  }
  DISTILL_ASSIGN_OR_RETURN(nlohmann::json index, writer->Finish());
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
          .count();
  index["seconds"] = seconds;
  index["tokens_per_second"] = windows * key.seq_len / std::max(seconds, 1e-9);
  if (verbose) {
    std::printf(
        "wrote target store %s: %lld windows of %lld positions, %s, "
        "%lld bytes a position, %.1f MB, in %.1f s\n",
        dir.c_str(), static_cast<long long>(windows),
        static_cast<long long>(key.seq_len),
        index["key"]["encoding"].get<std::string>().c_str(),
        static_cast<long long>(StoreBytesPerPosition(key)),
        index["total_bytes"].get<int64_t>() / 1e6, seconds);
  }
  return index;
}

}  // namespace distill::trainer
