// A TeacherClient that remembers the targets of every sample id in their
// wire encoding (fp32 or fp16 probabilities, or fp16 top-k values with int32
// indices and the tail mass), so epochs after the first need no teacher call.
// Valid only when the targets are a pure function of the sample id: no
// augmentation and one constant temperature (trainer/config.cc refuses the
// rest). The key — teacher model hash, temperature, encoding, top-k and
// class count — is stored with a disk cache; a file made under another key
// is discarded with a log line, never used. Used by one thread, like any
// TeacherClient.
#ifndef DISTILL_TRAINER_TEACHER_INTERNAL_TEACHER_CACHE_H_
#define DISTILL_TRAINER_TEACHER_INTERNAL_TEACHER_CACHE_H_

#include <torch/torch.h>

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "proto/teacher.pb.h"
#include "trainer/teacher/teacher_client.h"

namespace distill::trainer {

struct TeacherCacheKey {
  std::string model_hash;
  double temperature = 0;
  v1::Encoding encoding = v1::DENSE_FP32;
  int32_t top_k = 0;
  // SAMPLED: draws per row. Cached draws are reused in later epochs (as an
  // offline store of sampled targets would be).
  int32_t samples = 0;
  int64_t num_classes = 0;
};

class CachingTeacher final : public TeacherClient {
 public:
  // Caches the targets of sample ids in [0, num_samples). `file` empty keeps
  // the cache in memory; otherwise it is loaded from `file` when that exists
  // with the same key and written there (atomically) after every epoch that
  // added entries.
  static absl::StatusOr<std::unique_ptr<CachingTeacher>> Create(
      std::shared_ptr<TeacherClient> inner, const TeacherCacheKey& key,
      int64_t num_samples, const std::string& file);

  absl::StatusOr<losses::TeacherTargets> Targets(const data::Batch& batch,
                                                 double temperature) override;
  // A batch whose every sample is cached is answered at once; the others
  // go to the inner teacher and are cached when their future is read.
  TargetsFuture Submit(const data::Batch& batch, double temperature) override;
  bool asynchronous() const override { return inner_->asynchronous(); }
  // The inner teacher's stats plus teacher_cache_hits (samples).
  nlohmann::json TakeStats() override;
  absl::Status EpochDone() override;
  // Its table is keyed by training sample id: other inputs skip it.
  TeacherClient* any_input_teacher() override {
    return inner_->any_input_teacher();
  }
  int64_t num_classes() const override { return inner_->num_classes(); }
  std::string description() const override;

  // Samples cached so far.
  int64_t size() const { return cached_; }

 private:
  CachingTeacher(std::shared_ptr<TeacherClient> inner, TeacherCacheKey key,
                 std::string file)
      : inner_(std::move(inner)),
        key_(std::move(key)),
        file_(std::move(file)) {}
  void Allocate(int64_t num_samples);
  bool AllCached(const torch::Tensor& ids) const;
  void Insert(const torch::Tensor& ids, const losses::TeacherTargets& targets);
  losses::TeacherTargets Lookup(const torch::Tensor& ids) const;
  absl::Status Load();
  absl::Status Save() const;

  std::shared_ptr<TeacherClient> inner_;
  const TeacherCacheKey key_;
  const std::string file_;
  // Wire dtypes, one row per sample id: probs (dense) or values, indices
  // and tail (top-k); `have` marks the rows filled.
  torch::Tensor probs_, values_, indices_, tail_, have_;
  int64_t cached_ = 0;
  int64_t hits_ = 0;
  bool dirty_ = false;
};

}  // namespace distill::trainer

#endif  // DISTILL_TRAINER_TEACHER_INTERNAL_TEACHER_CACHE_H_
