// The offline target store: a teacher's targets for every training window of
// a token dataset, written once (`distill --write_target_store`) and read by
// later runs as their teacher, with no model and no server. A store is a
// folder of shards holding one fixed-size record per window (class ids in
// ceil(log2 V) bits, probabilities in the encoding's precision) and
// `store.json`, written last: its key (teacher, tokenizer, training tokens,
// temperature, encoding, vocabulary, windows) and the layout that
// turns a window id into a shard and an offset. A run whose key differs is
// refused, naming the field and both values. Layout and figures:
// docs/TARGET_STORE.md.
//
// TargetStoreWriter is used by one thread. StoreTeacher is a TeacherClient
// (one training loop at a time); its shards are memory-mapped read-only.
#ifndef DISTILL_TRAINER_TEACHER_TARGET_STORE_H_
#define DISTILL_TRAINER_TEACHER_TARGET_STORE_H_

#include <cstdint>
#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "proto/teacher.pb.h"
#include "trainer/teacher/teacher_client.h"

namespace distill::trainer {

// What a store's targets are a function of. In the key a job expects, an
// empty teacher_sha256 is not compared (a job reading a store written
// through teacher servers need not name the model).
struct TargetStoreKey {
  // SHA-256 (hex) of the teacher's weight or TorchScript file; an
  // ensemble's member hashes joined by ','.
  std::string teacher_sha256;
  std::string tokenizer_sha256;
  // SHA-256 of the training split's token file.
  std::string train_tokens_sha256;
  double temperature = 0;
  v1::Encoding encoding = v1::DENSE_FP32;
  // TOP_K and TOP_K_PACKED: k; SAMPLED: draws per position; else 0.
  int32_t top_k = 0;
  int32_t samples = 0;
  // HIDDEN_FP16: the teacher's hidden width H, in [1, V); else 0. In the
  // key a job expects, 0 is not compared (the job learns H from the store).
  int64_t hidden_size = 0;
  int64_t vocab_size = 0;
  // Positions per window (data.seq_len), tokens between window starts
  // (data.stride) and windows in the training split.
  int64_t seq_len = 0;
  int64_t stride = 0;
  int64_t windows = 0;
};

// Bytes one position takes in a store: DENSE_FP32 4V, DENSE_FP16 and
// DENSE_LOGP_FP16 2V; TOP_K 2k (fp16 values) + ceil(k b / 8) (ids of
// b = ceil(log2 V) bits) + 4 (fp32 tail mass); TOP_K_PACKED its wire record
// + 4; SAMPLED ceil(m b / 8) + m (uint8 counts); HIDDEN_FP16 2H (the
// teacher's output head is stored once beside the shards, in head.bin).
int64_t StoreBytesPerPosition(const TargetStoreKey& key);

struct TargetStoreWriterOptions {
  // The largest shard file; records never straddle shards. Default: 1 GiB.
  int64_t shard_bytes = int64_t{1} << 30;
  // Stored in store.json for people reading it. Default: empty.
  std::string teacher_description;
};

class TargetStoreWriter {
 public:
  // Writes into `<dir>.partial` (a leftover of an interrupted write is
  // removed first); Finish() renames it to `dir`. AlreadyExists when `dir`
  // exists; InvalidArgument for a key whose encoding settings are
  // inconsistent.
  static absl::StatusOr<std::unique_ptr<TargetStoreWriter>> Create(
      const std::string& dir, const TargetStoreKey& key,
      const TargetStoreWriterOptions& options = {});
  ~TargetStoreWriter();
  TargetStoreWriter(const TargetStoreWriter&) = delete;
  TargetStoreWriter& operator=(const TargetStoreWriter&) = delete;

  // Appends the targets of the next windows, in window-id order: [n, S, ...]
  // at the key's temperature, dense or in the key's encoding's form (dense
  // targets are reduced to top-k with the tail summed from the rest, or
  // sampled with the default generator; HIDDEN_FP16 takes hidden-state
  // targets only, all with one head of [V, H]). InvalidArgument when the
  // shape, temperature, form or head does not fit, or past `windows`
  // windows.
  absl::Status Append(const losses::TeacherTargets& targets);
  // After exactly `windows` windows: flushes the shards to disk, writes
  // store.json, renames the folder into place and flushes its parent.
  // Returns store.json's content.
  absl::StatusOr<nlohmann::json> Finish();

 private:
  TargetStoreWriter() = default;
  absl::Status AppendUnchecked(const losses::TeacherTargets& targets);
  absl::Status OpenShard();
  absl::Status CloseShard();

  std::string dir_, partial_;
  TargetStoreKey key_;
  TargetStoreWriterOptions options_;
  int64_t record_bytes_ = 0;
  int64_t windows_per_shard_ = 0;
  int64_t written_ = 0;
  std::FILE* shard_ = nullptr;
  std::vector<int64_t> shard_windows_;
  // HIDDEN_FP16: the head of the first targets appended.
  std::shared_ptr<const losses::OutputHead> head_;
};

// The key of the store in `dir`, as its store.json states it. NotFound when
// `dir` holds no store.json (not a store, or one whose writing never
// finished); DataLoss when store.json is not a store's.
absl::StatusOr<TargetStoreKey> ReadTargetStoreKey(const std::string& dir);

// "temperature 4 (the job's: 2)" for the first field where `stored` and
// `expected` differ; empty when they agree.
std::string TargetStoreKeyDifference(const TargetStoreKey& stored,
                                     const TargetStoreKey& expected);

// A TeacherClient answering from a store: the targets of window id i are
// record i, decoded and checked like a server's answer (teacher_server's
// codec), so a damaged record is an error Status, never a crash.
class StoreTeacher final : public TeacherClient {
 public:
  // Opens and maps the store in `dir`. NotFound as ReadTargetStoreKey;
  // FailedPrecondition naming the field and both values when its key is
  // not `expected`; DataLoss when a shard's size is not what store.json
  // says.
  static absl::StatusOr<std::unique_ptr<StoreTeacher>> Open(
      const std::string& dir, const TargetStoreKey& expected);
  ~StoreTeacher() override;

  // The windows `batch.ids` (training window ids). FailedPrecondition for a
  // temperature other than the store's, OutOfRange for an id past the
  // store; a record that does not decode is DataLoss naming the window.
  absl::StatusOr<losses::TeacherTargets> Targets(const data::Batch& batch,
                                                 double temperature) override;
  // It knows the training windows only.
  TeacherClient* any_input_teacher() override { return nullptr; }
  nlohmann::json TakeStats() override;
  int64_t num_classes() const override { return key_.vocab_size; }
  std::string description() const override;
  const TargetStoreKey& key() const { return key_; }

 private:
  struct Shard {
    std::string path;
    const unsigned char* bytes = nullptr;
    size_t size = 0;
  };
  StoreTeacher() = default;
  absl::StatusOr<losses::TeacherTargets> Read(const data::Batch& batch,
                                              double temperature);

  std::string dir_;
  TargetStoreKey key_;
  int64_t record_bytes_ = 0;
  int64_t windows_per_shard_ = 0;
  std::vector<Shard> shards_;
  // HIDDEN_FP16: the teacher's output head, read from head.bin.
  std::shared_ptr<const losses::OutputHead> head_;
  // Since the last TakeStats.
  int64_t read_batches_ = 0;
  int64_t read_windows_ = 0;
  int64_t read_bytes_ = 0;
  double read_seconds_ = 0;
};

}  // namespace distill::trainer

#endif  // DISTILL_TRAINER_TEACHER_TARGET_STORE_H_
