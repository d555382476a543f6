#include "trainer/teacher/target_store.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/file.h"
#include "common/file_hash.h"
#include "common/status.h"
#include "common/temperature.h"
#include "common/torch_status.h"
#include "teacher_server/codec.h"
#include "teacher_server/output_head.h"
#include "teacher_server/packed_topk.h"

namespace distill::trainer {
namespace {

namespace fs = std::filesystem;
using Form = losses::TeacherTargets::Form;

constexpr char kFormat[] = "distill target store";
constexpr int kVersion = 1;
constexpr char kIndexFile[] = "store.json";

// One field of a position's record: the wire field it holds and its bytes.
struct Field {
  const char* name;
  int64_t bytes;
};

int64_t IdBytes(int64_t n, int64_t vocab) {
  return (n * teacher::PackedIdBits(vocab) + 7) / 8;
}

std::vector<Field> Fields(const TargetStoreKey& key) {
  const int64_t v = key.vocab_size;
  switch (key.encoding) {
    case v1::DENSE_FP32:
      return {{"probs", 4 * v}};
    case v1::DENSE_FP16:
    case v1::DENSE_LOGP_FP16:
      return {{"probs", 2 * v}};
    case v1::TOP_K:
      return {{"topk_values", 2 * int64_t{key.top_k}},
              {"topk_ids", IdBytes(key.top_k, v)},
              {"tail_mass", 4}};
    case v1::TOP_K_PACKED:
      return {{"topk_packed", teacher::PackedRowBytes(key.top_k, v)},
              {"tail_mass", 4}};
    case v1::SAMPLED:
      return {{"sample_ids", IdBytes(key.samples, v)},
              {"sample_counts", key.samples}};
    case v1::HIDDEN_FP16:
      return {{"hidden", 2 * key.hidden_size}};
    default:
      return {};
  }
}

constexpr char kHeadFile[] = "head.bin";

// What makes a key unusable, or empty.
std::string KeyProblem(const TargetStoreKey& key) {
  if (key.vocab_size < 2 || key.vocab_size > (int64_t{1} << 31)) {
    return absl::StrCat("vocab_size ", key.vocab_size, " is not in [2, 2^31]");
  }
  if (key.seq_len < 1 || key.seq_len > (int64_t{1} << 24)) {
    return absl::StrCat("seq_len ", key.seq_len, " is not in [1, 2^24]");
  }
  if (key.stride < 1) return absl::StrCat("stride ", key.stride, " < 1");
  if (key.windows < 1) return absl::StrCat("windows ", key.windows, " < 1");
  if (!(key.temperature >= kMinTemperature) ||
      !std::isfinite(key.temperature)) {
    return absl::StrCat("temperature ", key.temperature,
                        " is not >= ", kMinTemperature);
  }
  if (Fields(key).empty()) {
    return absl::StrCat("encoding ", teacher::EncodingName(key.encoding),
                        " cannot be stored");
  }
  if (teacher::IsTopK(key.encoding) !=
      (key.top_k >= 1 && key.top_k <= key.vocab_size)) {
    return absl::StrCat("top_k ", key.top_k, " does not fit encoding ",
                        teacher::EncodingName(key.encoding), " and vocabulary ",
                        key.vocab_size);
  }
  if ((key.encoding == v1::SAMPLED) !=
      (key.samples >= 1 && key.samples <= teacher::kMaxSamples)) {
    return absl::StrCat("samples ", key.samples, " does not fit encoding ",
                        teacher::EncodingName(key.encoding));
  }
  if ((key.encoding == v1::HIDDEN_FP16) !=
      (key.hidden_size >= 1 && key.hidden_size < key.vocab_size)) {
    return absl::StrCat("hidden_size ", key.hidden_size,
                        " does not fit encoding ",
                        teacher::EncodingName(key.encoding), " and vocabulary ",
                        key.vocab_size);
  }
  return "";
}

nlohmann::json KeyJson(const TargetStoreKey& key) {
  return {{"teacher_sha256", key.teacher_sha256},
          {"tokenizer_sha256", key.tokenizer_sha256},
          {"train_tokens_sha256", key.train_tokens_sha256},
          {"temperature", key.temperature},
          {"encoding", v1::Encoding_Name(key.encoding)},
          {"top_k", key.top_k},
          {"samples", key.samples},
          {"hidden_size", key.hidden_size},
          {"vocab_size", key.vocab_size},
          {"seq_len", key.seq_len},
          {"stride", key.stride},
          {"windows", key.windows}};
}

TargetStoreKey KeyFromJson(const nlohmann::json& j) {
  TargetStoreKey key;
  key.teacher_sha256 = j.at("teacher_sha256").get<std::string>();
  key.tokenizer_sha256 = j.at("tokenizer_sha256").get<std::string>();
  key.train_tokens_sha256 = j.at("train_tokens_sha256").get<std::string>();
  key.temperature = j.at("temperature").get<double>();
  v1::Encoding encoding = v1::ENCODING_UNSPECIFIED;
  v1::Encoding_Parse(j.at("encoding").get<std::string>(), &encoding);
  key.encoding = encoding;
  key.top_k = j.at("top_k").get<int32_t>();
  key.samples = j.at("samples").get<int32_t>();
  // Stores written before hidden states held none.
  key.hidden_size = j.value("hidden_size", int64_t{0});
  key.vocab_size = j.at("vocab_size").get<int64_t>();
  key.seq_len = j.at("seq_len").get<int64_t>();
  key.stride = j.at("stride").get<int64_t>();
  key.windows = j.at("windows").get<int64_t>();
  return key;
}

std::string ShortHash(const std::string& hash) {
  return hash.empty() ? "(none)" : hash.substr(0, 16);
}

// Flushes the folder `dir` itself, so a rename into it survives a crash.
absl::Status SyncFolder(const std::string& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY);
  if (fd < 0 || ::fsync(fd) != 0) {
    if (fd >= 0) ::close(fd);
    return absl::DataLossError(absl::StrCat("cannot flush folder ", dir));
  }
  ::close(fd);
  return absl::OkStatus();
}

// Dense targets reduced to the key's form: top-k with the tail summed from
// the classes left out (not 1 - sum, which is rounding noise at large k),
// or m draws from p_T.
absl::StatusOr<losses::TeacherTargets> ToStoredForm(
    const losses::TeacherTargets& t, const TargetStoreKey& key) {
  if (t.form != Form::kDense || key.encoding == v1::DENSE_FP32 ||
      key.encoding == v1::DENSE_FP16 || key.encoding == v1::DENSE_LOGP_FP16) {
    return t;
  }
  return TorchCall("reducing dense targets for the store", [&] {
    if (key.encoding == v1::SAMPLED) {
      return losses::TeacherTargets::SampledFromProbs(t.probs, t.temperature,
                                                      key.samples);
    }
    losses::TeacherTargets out;
    out.form = Form::kTopK;
    out.temperature = t.temperature;
    out.num_classes = t.num_classes;
    auto [values, indices] = t.probs.topk(key.top_k, -1);
    out.values = values;
    out.indices = indices;
    out.tail_mass = t.probs.to(torch::kDouble)
                        .scatter(-1, indices, 0.0)
                        .sum(-1)
                        .clamp(0.0, 1.0)
                        .to(torch::kFloat);
    return out;
  });
}

// A wire field's bytes as UINT8 [n, S, bytes].
torch::Tensor Bytes(const v1::Tensor& wire, int64_t n, int64_t s) {
  const int64_t per_position =
      static_cast<int64_t>(wire.data().size()) / std::max<int64_t>(n * s, 1);
  return torch::from_blob(const_cast<char*>(wire.data().data()),
                          {n, s, per_position}, torch::kByte)
      .clone();
}

// `t` ([n, S, w], w <= m) padded with zeros to m columns.
torch::Tensor PadTo(const torch::Tensor& t, int64_t m) {
  if (t.size(-1) == m) return t;
  return torch::constant_pad_nd(t, {0, m - t.size(-1)}, 0);
}

// Every field of `message` (the key's encoding) as UINT8 [n, S, bytes], in
// Fields(key)'s order.
absl::StatusOr<std::vector<torch::Tensor>> FieldBytes(
    const v1::SoftTargets& message, const TargetStoreKey& key, int64_t n) {
  const int64_t s = key.seq_len;
  const int64_t v = key.vocab_size;
  std::vector<torch::Tensor> out;
  switch (key.encoding) {
    case v1::DENSE_FP32:
    case v1::DENSE_FP16:
    case v1::DENSE_LOGP_FP16:
      out.push_back(Bytes(message.probs(), n, s));
      break;
    case v1::HIDDEN_FP16:
      out.push_back(Bytes(message.hidden(), n, s));
      break;
    case v1::TOP_K: {
      out.push_back(Bytes(message.topk_values(), n, s));
      DISTILL_ASSIGN_OR_RETURN(
          torch::Tensor ids,
          teacher::FromProto(message.topk_indices(), "topk_indices"));
      out.push_back(teacher::PackIds(ids, v));
      out.push_back(Bytes(message.tail_mass(), n, s));
      break;
    }
    case v1::TOP_K_PACKED:
      out.push_back(Bytes(message.topk_packed(), n, s));
      out.push_back(Bytes(message.tail_mass(), n, s));
      break;
    case v1::SAMPLED: {
      DISTILL_ASSIGN_OR_RETURN(
          torch::Tensor ids,
          teacher::FromProto(message.sample_ids(), "sample_ids"));
      DISTILL_ASSIGN_OR_RETURN(
          torch::Tensor counts,
          teacher::FromProto(message.sample_counts(), "sample_counts"));
      out.push_back(teacher::PackIds(PadTo(ids, key.samples), v));
      out.push_back(PadTo(counts, key.samples).contiguous());
      break;
    }
    default:
      return absl::InvalidArgumentError("unstorable encoding");
  }
  return out;
}

v1::Tensor Wire(v1::Tensor::DType dtype, std::vector<int64_t> shape,
                const torch::Tensor& bytes) {
  v1::Tensor t;
  t.set_dtype(dtype);
  for (int64_t d : shape) t.add_shape(d);
  const torch::Tensor c = bytes.contiguous();
  t.set_data(reinterpret_cast<const char*>(c.data_ptr<uint8_t>()),
             static_cast<size_t>(c.numel()));
  return t;
}

// The wire message of `n` windows' records (UINT8 [n, record_bytes]).
absl::StatusOr<v1::SoftTargets> MessageOf(const torch::Tensor& records,
                                          const TargetStoreKey& key) {
  const int64_t n = records.size(0);
  const int64_t s = key.seq_len;
  const int64_t v = key.vocab_size;
  std::vector<torch::Tensor> fields;
  int64_t at = 0;
  for (const Field& f : Fields(key)) {
    fields.push_back(records.narrow(1, at, s * f.bytes).reshape({n, s, -1}));
    at += s * f.bytes;
  }
  v1::SoftTargets m;
  m.set_temperature(key.temperature);
  m.set_encoding(key.encoding);
  m.set_num_classes(v);
  switch (key.encoding) {
    case v1::DENSE_FP32:
      *m.mutable_probs() = Wire(v1::Tensor::FLOAT32, {n, s, v}, fields[0]);
      break;
    case v1::DENSE_FP16:
    case v1::DENSE_LOGP_FP16:
      *m.mutable_probs() = Wire(v1::Tensor::FLOAT16, {n, s, v}, fields[0]);
      break;
    case v1::HIDDEN_FP16:
      *m.mutable_hidden() =
          Wire(v1::Tensor::FLOAT16, {n, s, key.hidden_size}, fields[0]);
      break;
    case v1::TOP_K: {
      *m.mutable_topk_values() =
          Wire(v1::Tensor::FLOAT16, {n, s, key.top_k}, fields[0]);
      DISTILL_ASSIGN_OR_RETURN(torch::Tensor ids,
                               teacher::UnpackIds(fields[1], key.top_k, v));
      *m.mutable_topk_indices() = teacher::ToProto(ids, v1::Tensor::INT32);
      *m.mutable_tail_mass() = Wire(v1::Tensor::FLOAT32, {n, s}, fields[2]);
      break;
    }
    case v1::TOP_K_PACKED:
      *m.mutable_topk_packed() =
          Wire(v1::Tensor::UINT8, {n, s, teacher::PackedRowBytes(key.top_k, v)},
               fields[0]);
      m.set_top_k(key.top_k);
      *m.mutable_tail_mass() = Wire(v1::Tensor::FLOAT32, {n, s}, fields[1]);
      break;
    case v1::SAMPLED: {
      DISTILL_ASSIGN_OR_RETURN(torch::Tensor ids,
                               teacher::UnpackIds(fields[0], key.samples, v));
      *m.mutable_sample_ids() = teacher::ToProto(ids, v1::Tensor::INT32);
      *m.mutable_sample_counts() =
          Wire(v1::Tensor::UINT8, {n, s, key.samples}, fields[1]);
      m.set_samples(key.samples);
      break;
    }
    default:
      return absl::InvalidArgumentError("unstorable encoding");
  }
  return m;
}

std::string ShardName(int64_t i) {
  return absl::StrFormat("shard-%05d.bin", i);
}

}  // namespace

int64_t StoreBytesPerPosition(const TargetStoreKey& key) {
  int64_t bytes = 0;
  for (const Field& f : Fields(key)) bytes += f.bytes;
  return bytes;
}

std::string TargetStoreKeyDifference(const TargetStoreKey& stored,
                                     const TargetStoreKey& expected) {
  auto differs = [](const std::string& field, const auto& a, const auto& b) {
    return absl::StrCat(field, " ", a, " (the job's: ", b, ")");
  };
  if (!expected.teacher_sha256.empty() &&
      stored.teacher_sha256 != expected.teacher_sha256) {
    return differs("teacher SHA-256", ShortHash(stored.teacher_sha256),
                   ShortHash(expected.teacher_sha256));
  }
  if (stored.tokenizer_sha256 != expected.tokenizer_sha256) {
    return differs("tokenizer SHA-256", ShortHash(stored.tokenizer_sha256),
                   ShortHash(expected.tokenizer_sha256));
  }
  if (stored.train_tokens_sha256 != expected.train_tokens_sha256) {
    return differs("training tokens SHA-256",
                   ShortHash(stored.train_tokens_sha256),
                   ShortHash(expected.train_tokens_sha256));
  }
  if (stored.temperature != expected.temperature) {
    return differs("temperature", absl::StrFormat("%g", stored.temperature),
                   absl::StrFormat("%g", expected.temperature));
  }
  if (stored.encoding != expected.encoding) {
    return differs("encoding", teacher::EncodingName(stored.encoding),
                   teacher::EncodingName(expected.encoding));
  }
  if (stored.top_k != expected.top_k) {
    return differs("top_k", stored.top_k, expected.top_k);
  }
  if (stored.samples != expected.samples) {
    return differs("samples", stored.samples, expected.samples);
  }
  if (expected.hidden_size != 0 && stored.hidden_size != expected.hidden_size) {
    return differs("hidden_size", stored.hidden_size, expected.hidden_size);
  }
  if (stored.vocab_size != expected.vocab_size) {
    return differs("vocabulary", stored.vocab_size, expected.vocab_size);
  }
  if (stored.seq_len != expected.seq_len) {
    return differs("seq_len", stored.seq_len, expected.seq_len);
  }
  if (stored.stride != expected.stride) {
    return differs("stride", stored.stride, expected.stride);
  }
  if (stored.windows != expected.windows) {
    return differs("training windows", stored.windows, expected.windows);
  }
  return "";
}

// ---------------------------------------------------------------- writer

absl::StatusOr<std::unique_ptr<TargetStoreWriter>> TargetStoreWriter::Create(
    const std::string& dir, const TargetStoreKey& key,
    const TargetStoreWriterOptions& options) {
  const std::string problem = KeyProblem(key);
  if (!problem.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("target store ", dir, ": ", problem));
  }
  std::error_code ec;
  if (fs::exists(dir, ec)) {
    return absl::AlreadyExistsError(absl::StrCat(
        "target store ", dir,
        " already exists; remove it or choose another teacher.store_dir"));
  }
  std::unique_ptr<TargetStoreWriter> w(new TargetStoreWriter);
  // "runs/x/" names the folder runs/x: its partial twin is runs/x.partial.
  w->dir_ = dir;
  while (w->dir_.size() > 1 && w->dir_.back() == '/') w->dir_.pop_back();
  w->partial_ = w->dir_ + ".partial";
  w->key_ = key;
  w->options_ = options;
  w->record_bytes_ = StoreBytesPerPosition(key) * key.seq_len;
  w->windows_per_shard_ =
      std::max<int64_t>(1, options.shard_bytes / w->record_bytes_);
  fs::remove_all(w->partial_, ec);
  if (!fs::create_directories(w->partial_, ec) || ec) {
    return absl::PermissionDeniedError(absl::StrCat(
        "cannot create ", w->partial_, ": ", ec ? ec.message() : "exists"));
  }
  return w;
}

TargetStoreWriter::~TargetStoreWriter() {
  if (shard_ != nullptr) std::fclose(shard_);
}

absl::Status TargetStoreWriter::OpenShard() {
  const std::string path =
      absl::StrCat(partial_, "/", ShardName(shard_windows_.size()));
  shard_ = std::fopen(path.c_str(), "wb");
  if (shard_ == nullptr) {
    return absl::PermissionDeniedError(absl::StrCat("cannot create ", path));
  }
  shard_windows_.push_back(0);
  return absl::OkStatus();
}

absl::Status TargetStoreWriter::CloseShard() {
  if (shard_ == nullptr) return absl::OkStatus();
  const bool ok = std::fflush(shard_) == 0 && ::fsync(fileno(shard_)) == 0;
  const bool closed = std::fclose(shard_) == 0;
  shard_ = nullptr;
  if (!ok || !closed) {
    return absl::DataLossError(
        absl::StrCat("cannot write ", partial_, "/",
                     ShardName(shard_windows_.size() - 1), " (disk full?)"));
  }
  return absl::OkStatus();
}

absl::Status TargetStoreWriter::Append(const losses::TeacherTargets& given) {
  return TorchCall("writing the target store",
                   [&] { return AppendUnchecked(given); });
}

absl::Status TargetStoreWriter::AppendUnchecked(
    const losses::TeacherTargets& given) {
  const int64_t s = key_.seq_len;
  const torch::IntArrayRef shape = given.batch_shape();
  if (shape.size() != 2 || shape[1] != s) {
    return absl::InvalidArgumentError(absl::StrCat(
        "target store: targets cover ", teacher::ShapeString(shape),
        " positions; windows of ", s, " positions expected"));
  }
  const int64_t n = shape[0];
  if (written_ + n > key_.windows) {
    return absl::InvalidArgumentError(
        absl::StrCat("target store: ", written_ + n,
                     " windows appended; the "
                     "store holds ",
                     key_.windows));
  }
  if (given.temperature != key_.temperature ||
      given.num_classes != key_.vocab_size) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "target store: targets at temperature %g over %d classes; the store "
        "is at temperature %g over %d",
        given.temperature, given.num_classes, key_.temperature,
        key_.vocab_size));
  }
  if (key_.encoding == v1::HIDDEN_FP16) {
    if (given.form != Form::kHidden ||
        given.head->weight.size(1) != key_.hidden_size) {
      return absl::InvalidArgumentError(absl::StrCat(
          "target store: a HIDDEN_FP16 store takes hidden states of width ",
          key_.hidden_size, " with their head; got ",
          losses::FormName(given.form), " targets"));
    }
    if (head_ == nullptr) head_ = given.head;
    if (given.head != head_) {
      return absl::InvalidArgumentError(
          "target store: hidden states with another output head than the "
          "first windows'");
    }
  }
  DISTILL_ASSIGN_OR_RETURN(const losses::TeacherTargets targets,
                           ToStoredForm(given, key_));
  if (teacher::IsTopK(key_.encoding) && targets.values.size(-1) != key_.top_k) {
    return absl::InvalidArgumentError(absl::StrCat(
        "target store: top-k targets with k = ", targets.values.size(-1),
        "; the store's k is ", key_.top_k));
  }
  DISTILL_ASSIGN_OR_RETURN(const v1::SoftTargets message,
                           teacher::EncodeTargets(targets, key_.encoding));
  DISTILL_ASSIGN_OR_RETURN(const std::vector<torch::Tensor> fields,
                           FieldBytes(message, key_, n));
  const std::vector<Field> layout = Fields(key_);
  for (int64_t w = 0; w < n; ++w) {
    if (shard_ == nullptr || shard_windows_.back() == windows_per_shard_) {
      DISTILL_RETURN_IF_ERROR(CloseShard());
      DISTILL_RETURN_IF_ERROR(OpenShard());
    }
    for (size_t f = 0; f < fields.size(); ++f) {
      const size_t bytes = static_cast<size_t>(s * layout[f].bytes);
      if (fields[f].numel() != n * s * layout[f].bytes) {
        return absl::InternalError(
            absl::StrCat("target store: field ", layout[f].name, " holds ",
                         fields[f].numel(), " bytes for ", n, " windows"));
      }
      const uint8_t* src = fields[f].data_ptr<uint8_t>() + w * bytes;
      if (std::fwrite(src, 1, bytes, shard_) != bytes) {
        return absl::DataLossError(absl::StrCat(
            "cannot write ", partial_, "/",
            ShardName(shard_windows_.size() - 1), " (disk full?)"));
      }
    }
    ++shard_windows_.back();
    ++written_;
  }
  return absl::OkStatus();
}

absl::StatusOr<nlohmann::json> TargetStoreWriter::Finish() {
  if (written_ != key_.windows) {
    return absl::FailedPreconditionError(absl::StrCat(
        "target store: ", written_, " of ", key_.windows, " windows written"));
  }
  DISTILL_RETURN_IF_ERROR(CloseShard());
  nlohmann::json fields = nlohmann::json::array();
  for (const Field& f : Fields(key_)) {
    fields.push_back({{"name", f.name}, {"bytes_per_position", f.bytes}});
  }
  nlohmann::json shards = nlohmann::json::array();
  for (size_t i = 0; i < shard_windows_.size(); ++i) {
    shards.push_back({{"file", ShardName(i)}, {"windows", shard_windows_[i]}});
  }
  nlohmann::json head;
  if (key_.encoding == v1::HIDDEN_FP16) {
    // The head once, in the byte layout its hash covers.
    const std::string bytes = teacher::OutputHeadBytes(*head_);
    DISTILL_RETURN_IF_ERROR(
        WriteStringAtomically(absl::StrCat(partial_, "/", kHeadFile), bytes));
    DISTILL_ASSIGN_OR_RETURN(const std::string sha, Sha256Hex({bytes}));
    head = {{"file", kHeadFile},
            {"bias", head_->bias.defined()},
            {"logit_scale", head_->logit_scale},
            {"logit_softcap", head_->logit_softcap},
            {"sha256", sha}};
  }
  nlohmann::json index = {{"format", kFormat},
                          {"version", kVersion},
                          {"key", KeyJson(key_)},
                          {"teacher", options_.teacher_description},
                          {"bytes_per_token", StoreBytesPerPosition(key_)},
                          {"record_bytes", record_bytes_},
                          {"windows_per_shard", windows_per_shard_},
                          {"fields", fields},
                          {"shards", shards},
                          {"total_bytes", record_bytes_ * key_.windows}};
  if (!head.is_null()) index["head"] = head;
  DISTILL_RETURN_IF_ERROR(WriteStringAtomically(
      absl::StrCat(partial_, "/", kIndexFile), index.dump(2) + "\n"));
  std::error_code ec;
  fs::rename(partial_, dir_, ec);
  if (ec) {
    return absl::InternalError(absl::StrCat("cannot rename ", partial_, " to ",
                                            dir_, ": ", ec.message()));
  }
  const fs::path parent = fs::absolute(dir_).parent_path();
  DISTILL_RETURN_IF_ERROR(SyncFolder(parent.string()));
  return index;
}

// ---------------------------------------------------------------- reader

namespace {

struct Index {
  TargetStoreKey key;
  int64_t record_bytes = 0;
  int64_t windows_per_shard = 0;
  std::vector<std::pair<std::string, int64_t>> shards;
  // HIDDEN_FP16: store.json's "head" (bias, logit_scale, logit_softcap,
  // sha256).
  nlohmann::json head;
};

// The head in `dir`/head.bin, as `index` describes it: its size must be the
// key's [V, H] (and [V]), its hash store.json's.
absl::StatusOr<std::shared_ptr<const losses::OutputHead>> ReadHead(
    const std::string& dir, const Index& index) {
  const std::string path = absl::StrCat(dir, "/", kHeadFile);
  auto bad = [&](const std::string& why) {
    return absl::DataLossError(absl::StrCat("target store ", path, ": ", why,
                                            "; write the store again"));
  };
  auto head = std::make_shared<losses::OutputHead>();
  bool bias = false;
  std::string sha;
  try {
    bias = index.head.at("bias").get<bool>();
    head->logit_scale = index.head.at("logit_scale").get<double>();
    head->logit_softcap = index.head.at("logit_softcap").get<double>();
    sha = index.head.at("sha256").get<std::string>();
  } catch (const nlohmann::json::exception& e) {
    return bad(absl::StrCat("store.json's head: ", e.what()));
  }
  if (!std::isfinite(head->logit_scale) || head->logit_scale <= 0 ||
      !std::isfinite(head->logit_softcap) || head->logit_softcap < 0) {
    return bad("store.json's head has a logit scale or softcap out of range");
  }
  const int64_t v = index.key.vocab_size, h = index.key.hidden_size;
  // KeyProblem bounds v by 2^31 and h by v: 4 v (h + 1) fits in int64 only
  // up to about 2^61; a key past that is a lie.
  if (h + 1 > (std::numeric_limits<int64_t>::max() / 4) / v) {
    return bad(absl::StrCat("a [", v, ", ", h, "] head cannot be addressed"));
  }
  std::error_code ec;
  const auto size = fs::file_size(path, ec);
  const int64_t want = 4 * v * h + (bias ? 4 * v : 0);
  if (ec || static_cast<int64_t>(size) != want) {
    return bad(absl::StrCat(
        "the head file holds ", ec ? std::uintmax_t{0} : size, " bytes; a [", v,
        ", ", h, "] head", bias ? " with its bias" : "", " takes ", want));
  }
  DISTILL_ASSIGN_OR_RETURN(const std::string bytes, ReadFile(path));
  if (static_cast<int64_t>(bytes.size()) != want) {
    return bad(absl::StrCat("the head file changed while it was read (",
                            bytes.size(), " bytes)"));
  }
  DISTILL_RETURN_IF_ERROR(TorchCall("reading the store's output head", [&] {
    head->weight = torch::empty({v, h}, torch::kFloat);
    std::memcpy(head->weight.data_ptr(), bytes.data(), 4 * v * h);
    if (bias) {
      head->bias = torch::empty({v}, torch::kFloat);
      std::memcpy(head->bias.data_ptr(), bytes.data() + 4 * v * h, 4 * v);
    }
  }));
  DISTILL_ASSIGN_OR_RETURN(const std::string got,
                           teacher::OutputHeadSha256(*head));
  if (got != sha) {
    return bad(absl::StrCat("the head hashes to ", got.substr(0, 16),
                            ", not to ", sha.substr(0, 16),
                            " as store.json says"));
  }
  return std::shared_ptr<const losses::OutputHead>(std::move(head));
}

absl::StatusOr<Index> ReadIndex(const std::string& dir) {
  const std::string path = absl::StrCat(dir, "/", kIndexFile);
  std::error_code ec;
  if (!fs::exists(path, ec)) {
    return absl::NotFoundError(absl::StrCat(
        "no target store in ", dir, ": ", kIndexFile,
        " is missing (not a store, or its writing never finished; write it "
        "with distill --write_target_store)"));
  }
  DISTILL_ASSIGN_OR_RETURN(const std::string text, ReadFile(path));
  const nlohmann::json j = nlohmann::json::parse(text, nullptr, false);
  auto bad = [&](const std::string& why) {
    return absl::DataLossError(absl::StrCat("target store ", path, ": ", why));
  };
  if (j.is_discarded() || !j.is_object()) return bad("not JSON");
  Index index;
  try {
    if (j.at("format").get<std::string>() != kFormat ||
        j.at("version").get<int>() != kVersion) {
      return bad(absl::StrCat("not a version-", kVersion, " target store"));
    }
    index.key = KeyFromJson(j.at("key"));
    index.record_bytes = j.at("record_bytes").get<int64_t>();
    index.windows_per_shard = j.at("windows_per_shard").get<int64_t>();
    for (const nlohmann::json& s : j.at("shards")) {
      index.shards.emplace_back(s.at("file").get<std::string>(),
                                s.at("windows").get<int64_t>());
    }
    if (index.key.encoding == v1::HIDDEN_FP16) index.head = j.at("head");
  } catch (const nlohmann::json::exception& e) {
    return bad(e.what());
  }
  const std::string problem = KeyProblem(index.key);
  if (!problem.empty()) return bad(problem);
  const int64_t record = StoreBytesPerPosition(index.key) * index.key.seq_len;
  if (index.record_bytes != record) {
    return bad(absl::StrCat("record_bytes ", index.record_bytes, "; its key ",
                            "makes records of ", record));
  }
  if (index.windows_per_shard < 1) return bad("windows_per_shard < 1");
  // Byte offsets are windows x record_bytes in int64: a count that cannot
  // be addressed is a lie, refused before any product is formed.
  const int64_t addressable = std::numeric_limits<int64_t>::max() / record;
  if (index.windows_per_shard > addressable ||
      index.key.windows > addressable) {
    return bad(absl::StrCat("windows_per_shard ", index.windows_per_shard,
                            " or windows ", index.key.windows, " of ", record,
                            " bytes each cannot be addressed"));
  }
  int64_t windows = 0;
  for (size_t i = 0; i < index.shards.size(); ++i) {
    const auto& [file, n] = index.shards[i];
    if (file.empty() || file.find('/') != std::string::npos || file == "..") {
      return bad(absl::StrCat("shard file '", file, "' is not a file name"));
    }
    const bool last = i + 1 == index.shards.size();
    if (n < 1 || n > index.windows_per_shard ||
        (!last && n != index.windows_per_shard)) {
      return bad(absl::StrCat("shard ", file, " holds ", n,
                              " windows; shards hold ", index.windows_per_shard,
                              " (the last at most)"));
    }
    if (n > index.key.windows - windows) {
      return bad(absl::StrCat("its shards hold more windows than its key's ",
                              index.key.windows));
    }
    windows += n;
  }
  if (windows != index.key.windows) {
    return bad(absl::StrCat("its shards hold ", windows, " windows; its key ",
                            "says ", index.key.windows));
  }
  return index;
}

}  // namespace

absl::StatusOr<TargetStoreKey> ReadTargetStoreKey(const std::string& dir) {
  DISTILL_ASSIGN_OR_RETURN(const Index index, ReadIndex(dir));
  return index.key;
}

absl::StatusOr<std::unique_ptr<StoreTeacher>> StoreTeacher::Open(
    const std::string& dir, const TargetStoreKey& expected) {
  DISTILL_ASSIGN_OR_RETURN(const Index index, ReadIndex(dir));
  const std::string difference = TargetStoreKeyDifference(index.key, expected);
  if (!difference.empty()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "target store ", dir, " was written for another job: ", difference,
        "; write a store for this job with distill --write_target_store"));
  }
  std::unique_ptr<StoreTeacher> t(new StoreTeacher);
  t->dir_ = dir;
  t->key_ = index.key;
  t->record_bytes_ = index.record_bytes;
  t->windows_per_shard_ = index.windows_per_shard;
  if (index.key.encoding == v1::HIDDEN_FP16) {
    DISTILL_ASSIGN_OR_RETURN(t->head_, ReadHead(dir, index));
  }
  for (const auto& [file, windows] : index.shards) {
    Shard shard;
    shard.path = absl::StrCat(dir, "/", file);
    const int fd = ::open(shard.path.c_str(), O_RDONLY);
    struct stat st {};
    if (fd < 0 || ::fstat(fd, &st) != 0) {
      if (fd >= 0) ::close(fd);
      return absl::DataLossError(absl::StrCat(
          "target store ", dir, ": cannot read shard ", shard.path));
    }
    const int64_t want = windows * index.record_bytes;
    if (static_cast<int64_t>(st.st_size) != want) {
      ::close(fd);
      return absl::DataLossError(
          absl::StrCat("target store shard ", shard.path, " is ", st.st_size,
                       " bytes; store.json says ", windows, " windows of ",
                       index.record_bytes, " bytes (", want,
                       "): the store is damaged; write it again"));
    }
    void* map = ::mmap(nullptr, static_cast<size_t>(want), PROT_READ,
                       MAP_SHARED, fd, 0);
    ::close(fd);
    if (map == MAP_FAILED) {
      return absl::ResourceExhaustedError(
          absl::StrCat("cannot map target store shard ", shard.path));
    }
    shard.bytes = static_cast<const unsigned char*>(map);
    shard.size = static_cast<size_t>(want);
    t->shards_.push_back(shard);
  }
  return t;
}

StoreTeacher::~StoreTeacher() {
  for (const Shard& s : shards_) {
    ::munmap(const_cast<unsigned char*>(s.bytes), s.size);
  }
}

absl::StatusOr<losses::TeacherTargets> StoreTeacher::Targets(
    const data::Batch& batch, double temperature) {
  return TorchCall("reading the target store",
                   [&] { return Read(batch, temperature); });
}

absl::StatusOr<losses::TeacherTargets> StoreTeacher::Read(
    const data::Batch& batch, double temperature) {
  const auto start = std::chrono::steady_clock::now();
  if (temperature != key_.temperature) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "target store %s holds targets at temperature %g, not %g", dir_,
        key_.temperature, temperature));
  }
  const torch::Tensor ids = batch.ids.to(torch::kLong).contiguous();
  const int64_t n = ids.numel();
  torch::Tensor records = torch::empty({n, record_bytes_}, torch::kByte);
  for (int64_t i = 0; i < n; ++i) {
    const int64_t id = ids.data_ptr<int64_t>()[i];
    if (id < 0 || id >= key_.windows) {
      return absl::OutOfRangeError(
          absl::StrCat("target store ", dir_, " holds windows [0, ",
                       key_.windows, "); asked for window ", id));
    }
    const Shard& shard = shards_[id / windows_per_shard_];
    std::memcpy(records.data_ptr<uint8_t>() + i * record_bytes_,
                shard.bytes + (id % windows_per_shard_) * record_bytes_,
                record_bytes_);
  }
  auto decoded = [&]() -> absl::StatusOr<losses::TeacherTargets> {
    DISTILL_ASSIGN_OR_RETURN(const v1::SoftTargets message,
                             MessageOf(records, key_));
    return teacher::DecodeTargets(message, n, head_);
  }();
  if (!decoded.ok()) {
    // Name the first window that does not decode on its own.
    for (int64_t i = 0; i < n; ++i) {
      auto one = MessageOf(records.narrow(0, i, 1), key_);
      absl::Status status = one.status();
      if (one.ok()) status = teacher::DecodeTargets(*one, 1, head_).status();
      if (!status.ok()) {
        return absl::DataLossError(absl::StrCat(
            "target store ", dir_, ": window ", ids.data_ptr<int64_t>()[i],
            " does not decode (", status.message(),
            "): the store is damaged; write it again"));
      }
    }
    return absl::DataLossError(
        absl::StrCat("target store ", dir_, ": ", decoded.status().message()));
  }
  read_bytes_ += n * record_bytes_;
  read_seconds_ +=
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
          .count();
  ++read_batches_;
  read_windows_ += n;
  return decoded;
}

nlohmann::json StoreTeacher::TakeStats() {
  nlohmann::json stats = {{"teacher_batches", read_batches_},
                          {"teacher_samples", read_windows_},
                          {"teacher_store_bytes", read_bytes_}};
  if (read_batches_ > 0) {
    stats["teacher_latency_ms_mean"] = 1000 * read_seconds_ / read_batches_;
  }
  read_batches_ = read_windows_ = read_bytes_ = 0;
  read_seconds_ = 0;
  return stats;
}

std::string StoreTeacher::description() const {
  std::string encoding = teacher::EncodingName(key_.encoding);
  if (teacher::IsTopK(key_.encoding)) {
    absl::StrAppend(&encoding, " k=", key_.top_k);
  } else if (key_.encoding == v1::SAMPLED) {
    absl::StrAppend(&encoding, " m=", key_.samples);
  } else if (key_.encoding == v1::HIDDEN_FP16) {
    absl::StrAppend(&encoding, " H=", key_.hidden_size);
  }
  return absl::StrFormat("target store %s (teacher %s, %s, T=%g, %d B/token)",
                         dir_, ShortHash(key_.teacher_sha256), encoding,
                         key_.temperature, StoreBytesPerPosition(key_));
}

}  // namespace distill::trainer
