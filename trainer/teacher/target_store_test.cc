// The offline target store: every encoding written and read back against a
// dense reference, random access across shards, bytes per position against
// hand counts, keys that differ refused by name, and stores that lie
// (truncated shards, edited store.json, damaged records, unfinished writes).
#include "trainer/teacher/target_store.h"

#include <torch/torch.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/file.h"
#include "common/testing/scratch_dir.h"
#include "common/testing/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace distill::trainer {
namespace {

namespace fs = std::filesystem;
using ::distill::testing::IsOk;
using ::distill::testing::StatusIs;
using ::testing::HasSubstr;

constexpr int64_t kWindows = 6, kSeq = 5, kVocab = 50;
constexpr double kT = 2.0;

TargetStoreKey KeyFor(v1::Encoding encoding, int32_t top_k = 0,
                      int32_t samples = 0) {
  TargetStoreKey key;
  key.teacher_sha256 = std::string(64, 'a');
  key.tokenizer_sha256 = std::string(64, 'b');
  key.train_tokens_sha256 = std::string(64, 'c');
  key.temperature = kT;
  key.encoding = encoding;
  key.top_k = top_k;
  key.samples = samples;
  key.vocab_size = kVocab;
  key.seq_len = kSeq;
  key.stride = kSeq;
  key.windows = kWindows;
  return key;
}

// p_T of a fixed teacher: [kWindows, kSeq, kVocab], peaked enough that the
// top few classes hold most of the mass.
torch::Tensor ReferenceProbs() {
  torch::manual_seed(3);
  return torch::softmax(torch::randn({kWindows, kSeq, kVocab}) * 6 / kT, -1);
}

losses::TeacherTargets Dense(const torch::Tensor& probs) {
  losses::TeacherTargets t;
  t.temperature = kT;
  t.num_classes = kVocab;
  t.probs = probs;
  return t;
}

data::Batch BatchOf(std::vector<int64_t> ids) {
  data::Batch b;
  b.ids = torch::tensor(ids, torch::kLong);
  return b;
}

class TargetStoreTest : public ::distill::testing::ScratchDirTest {
 protected:
  // Writes the reference as `key` says, 2 windows a shard, in two appends.
  std::string WriteStore(const TargetStoreKey& key, const std::string& name) {
    const std::string dir = (scratch_.path() / name).string();
    TargetStoreWriterOptions options;
    options.shard_bytes = 2 * StoreBytesPerPosition(key) * kSeq + 1;
    auto writer = TargetStoreWriter::Create(dir, key, options);
    EXPECT_THAT(writer.status(), IsOk());
    if (!writer.ok()) return dir;
    const torch::Tensor probs = ReferenceProbs();
    torch::manual_seed(11);
    EXPECT_THAT((*writer)->Append(Dense(probs.narrow(0, 0, 4))), IsOk());
    EXPECT_THAT((*writer)->Append(Dense(probs.narrow(0, 4, 2))), IsOk());
    EXPECT_THAT((*writer)->Finish().status(), IsOk());
    return dir;
  }

  absl::StatusOr<losses::TeacherTargets> Read(const std::string& dir,
                                              const TargetStoreKey& key,
                                              std::vector<int64_t> ids) {
    auto store = StoreTeacher::Open(dir, key);
    if (!store.ok()) return store.status();
    return (*store)->Targets(BatchOf(ids), kT);
  }
};

const std::vector<int64_t> kIds = {5, 0, 3, 3};

torch::Tensor Pick(const torch::Tensor& t) {
  return t.index_select(0, torch::tensor(kIds, torch::kLong));
}

TEST_F(TargetStoreTest, DenseEncodingsReadBackAsStored) {
  const torch::Tensor want = Pick(ReferenceProbs());
  for (v1::Encoding e : {v1::DENSE_FP32, v1::DENSE_FP16, v1::DENSE_LOGP_FP16}) {
    SCOPED_TRACE(v1::Encoding_Name(e));
    const TargetStoreKey key = KeyFor(e);
    const std::string dir = WriteStore(key, v1::Encoding_Name(e));
    // Three shards of 2 windows: 6 windows of 5 positions.
    EXPECT_EQ(fs::file_size(dir + "/shard-00002.bin"),
              static_cast<uintmax_t>(2 * kSeq * StoreBytesPerPosition(key)));
    auto got = Read(dir, key, kIds);
    ASSERT_THAT(got.status(), IsOk());
    ASSERT_EQ(got->form, losses::TeacherTargets::Form::kDense);
    ASSERT_EQ(got->probs.sizes(), want.sizes());
    if (e == v1::DENSE_FP32) {
      EXPECT_TRUE(torch::equal(got->probs, want));
    } else if (e == v1::DENSE_FP16) {
      EXPECT_TRUE(
          torch::equal(got->probs, want.to(torch::kHalf).to(torch::kFloat)));
    } else {
      // log p in fp16: relative error at most 2^-11 * |log p|.
      const torch::Tensor rel = (got->probs / want - 1).abs();
      const torch::Tensor bound = want.log().abs() * (1.0 / 2048) * 1.05;
      EXPECT_TRUE((rel <= bound + 1e-6).all().item<bool>());
    }
  }
}

// Hidden states [6, 5, 4] in fp16 with their head stored once beside them:
// read back, the head rebuilds the teacher's distribution; a head file
// that changed or lost bytes is refused.
TEST_F(TargetStoreTest, HiddenStatesReadBackWithTheirHead) {
  TargetStoreKey key = KeyFor(v1::HIDDEN_FP16);
  key.hidden_size = 4;
  EXPECT_EQ(StoreBytesPerPosition(key), 8);  // 4 fp16 states
  torch::manual_seed(5);
  auto head = std::make_shared<losses::OutputHead>();
  head->weight = torch::randn({kVocab, 4});
  head->bias = torch::randn({kVocab});
  head->logit_softcap = 3;
  const torch::Tensor hidden = torch::randn({kWindows, kSeq, 4});
  const std::string dir = (scratch_.path() / "hidden").string();
  {
    TargetStoreWriterOptions options;
    options.shard_bytes = 2 * 8 * kSeq;
    auto writer = TargetStoreWriter::Create(dir, key, options);
    ASSERT_THAT(writer.status(), IsOk());
    EXPECT_THAT((*writer)->Append(Dense(ReferenceProbs().narrow(0, 0, 1))),
                StatusIs(absl::StatusCode::kInvalidArgument,
                         HasSubstr("takes hidden states of width 4")));
    ASSERT_THAT((*writer)->Append(losses::TeacherTargets::FromHidden(
                    hidden.narrow(0, 0, 4), head, kT)),
                IsOk());
    auto other = std::make_shared<losses::OutputHead>(*head);
    EXPECT_THAT((*writer)->Append(losses::TeacherTargets::FromHidden(
                    hidden.narrow(0, 4, 2), other, kT)),
                StatusIs(absl::StatusCode::kInvalidArgument,
                         HasSubstr("another output head")));
    ASSERT_THAT((*writer)->Append(losses::TeacherTargets::FromHidden(
                    hidden.narrow(0, 4, 2), head, kT)),
                IsOk());
    ASSERT_THAT((*writer)->Finish().status(), IsOk());
  }
  // 50 x 4 weights and 50 biases as float32.
  EXPECT_EQ(fs::file_size(dir + "/head.bin"), 4u * (kVocab * 4 + kVocab));

  // A job that does not know H reads it; one that expects another H not.
  TargetStoreKey expected = key;
  expected.hidden_size = 0;
  auto got = Read(dir, expected, kIds);
  ASSERT_THAT(got.status(), IsOk());
  ASSERT_EQ(got->form, losses::TeacherTargets::Form::kHidden);
  const torch::Tensor h = Pick(hidden).to(torch::kHalf).to(torch::kFloat);
  EXPECT_TRUE(torch::equal(got->hidden, h));
  EXPECT_TRUE(torch::equal(got->head->weight, head->weight));
  EXPECT_TRUE(torch::equal(got->head->bias, head->bias));
  // p_T = softmax(3 tanh((h W^T + b) / 3) / T), written out.
  const torch::Tensor z =
      3 * torch::tanh((torch::matmul(h, head->weight.t()) + head->bias) / 3);
  EXPECT_TRUE(torch::allclose(got->Materialized().probs,
                              torch::softmax(z / kT, -1), 1e-5, 1e-6));
  expected.hidden_size = 5;
  EXPECT_THAT(Read(dir, expected, kIds).status(),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       HasSubstr("hidden_size 4 (the job's: 5)")));

  std::string bytes = *ReadFile(dir + "/head.bin");
  bytes[17] ^= 1;
  ASSERT_THAT(WriteStringAtomically(dir + "/head.bin", bytes), IsOk());
  EXPECT_THAT(Read(dir, key, kIds).status(),
              StatusIs(absl::StatusCode::kDataLoss,
                       HasSubstr("head.bin: the head hashes to")));
  bytes.pop_back();
  ASSERT_THAT(WriteStringAtomically(dir + "/head.bin", bytes), IsOk());
  EXPECT_THAT(Read(dir, key, kIds).status(),
              StatusIs(absl::StatusCode::kDataLoss,
                       HasSubstr("the head file holds 999 bytes; a [50, 4] "
                                 "head with its bias takes 1000")));
}

TEST_F(TargetStoreTest, TopKEncodingsReadBackWithTheirTails) {
  const torch::Tensor probs = Pick(ReferenceProbs());
  const int64_t k = 7;
  auto [top, ids] = probs.topk(k, -1);
  const torch::Tensor tail = 1 - top.to(torch::kDouble).sum(-1);
  for (v1::Encoding e : {v1::TOP_K, v1::TOP_K_PACKED}) {
    SCOPED_TRACE(v1::Encoding_Name(e));
    const TargetStoreKey key = KeyFor(e, k);
    auto got = Read(WriteStore(key, v1::Encoding_Name(e)), key, kIds);
    ASSERT_THAT(got.status(), IsOk());
    ASSERT_EQ(got->form, losses::TeacherTargets::Form::kTopK);
    EXPECT_TRUE(torch::equal(got->indices, ids));
    EXPECT_TRUE(torch::allclose(got->tail_mass.to(torch::kDouble), tail,
                                /*rtol=*/1e-5, /*atol=*/1e-6));
    if (e == v1::TOP_K) {
      EXPECT_TRUE(
          torch::equal(got->values, top.to(torch::kHalf).to(torch::kFloat)));
    } else {
      // 8-bit log codes: within half a step of the row's log range.
      EXPECT_TRUE(torch::allclose(got->values, top, /*rtol=*/0.05));
    }
  }
}

TEST_F(TargetStoreTest, SampledDrawsAreTheWritersDraws) {
  const int32_t m = 12;
  const TargetStoreKey key = KeyFor(v1::SAMPLED, 0, m);
  const std::string dir = WriteStore(key, "sampled");
  // The writer drew from the default generator seeded 11, 4 windows then 2.
  torch::manual_seed(11);
  const torch::Tensor probs = ReferenceProbs();
  torch::manual_seed(11);
  const torch::Tensor first =
      torch::multinomial(probs.narrow(0, 0, 4).reshape({-1, kVocab}), m, true);
  const torch::Tensor second =
      torch::multinomial(probs.narrow(0, 4, 2).reshape({-1, kVocab}), m, true);
  const torch::Tensor draws =
      torch::cat({first, second}).reshape({kWindows, kSeq, m});
  const torch::Tensor histogram =
      torch::zeros({kWindows, kSeq, kVocab})
          .scatter_add_(-1, draws, torch::ones({kWindows, kSeq, m})) /
      m;
  auto got = Read(dir, key, kIds);
  ASSERT_THAT(got.status(), IsOk());
  ASSERT_EQ(got->form, losses::TeacherTargets::Form::kSampled);
  const torch::Tensor stored = torch::zeros({4, kSeq, kVocab})
                                   .scatter_add_(-1, got->indices, got->values);
  EXPECT_TRUE(torch::allclose(stored, Pick(histogram)));
}

TEST(TargetStoreLayoutTest, BytesPerPositionMatchHandCounts) {
  TargetStoreKey key;
  key.vocab_size = 32000;  // 15-bit ids
  key.encoding = v1::DENSE_FP32;
  EXPECT_EQ(StoreBytesPerPosition(key), 128000);
  key.encoding = v1::DENSE_LOGP_FP16;
  EXPECT_EQ(StoreBytesPerPosition(key), 64000);
  key.encoding = v1::TOP_K;
  key.top_k = 128;  // 256 fp16 + 240 ids + 4 tail
  EXPECT_EQ(StoreBytesPerPosition(key), 500);
  key.encoding = v1::TOP_K_PACKED;  // 8 + 240 + 128 + 4 tail
  EXPECT_EQ(StoreBytesPerPosition(key), 380);
  key.encoding = v1::SAMPLED;
  key.top_k = 0;
  key.samples = 32;  // 32 x 15 bits = 60 bytes + 32 counts
  EXPECT_EQ(StoreBytesPerPosition(key), 92);
}

TEST_F(TargetStoreTest, EveryKeyFieldThatDiffersIsRefusedByName) {
  const TargetStoreKey key = KeyFor(v1::TOP_K, 4);
  const std::string dir = WriteStore(key, "store");
  struct Case {
    std::function<void(TargetStoreKey&)> change;
    std::string message;
  };
  const std::vector<Case> cases = {
      {[](TargetStoreKey& k) { k.teacher_sha256 = std::string(64, 'd'); },
       "teacher SHA-256 aaaaaaaaaaaaaaaa (the job's: dddddddddddddddd)"},
      {[](TargetStoreKey& k) { k.tokenizer_sha256 = std::string(64, 'e'); },
       "tokenizer SHA-256 bbbbbbbbbbbbbbbb (the job's: eeeeeeeeeeeeeeee)"},
      {[](TargetStoreKey& k) { k.train_tokens_sha256 = "f"; },
       "training tokens SHA-256 cccccccccccccccc (the job's: f)"},
      {[](TargetStoreKey& k) { k.temperature = 4; },
       "temperature 2 (the job's: 4)"},
      {[](TargetStoreKey& k) { k.encoding = v1::TOP_K_PACKED; },
       "encoding TOP_K (the job's: TOP_K_PACKED)"},
      {[](TargetStoreKey& k) { k.top_k = 8; }, "top_k 4 (the job's: 8)"},
      {[](TargetStoreKey& k) { k.vocab_size = 51; },
       "vocabulary 50 (the job's: 51)"},
      {[](TargetStoreKey& k) { k.seq_len = 6; }, "seq_len 5 (the job's: 6)"},
      {[](TargetStoreKey& k) { k.stride = 2; }, "stride 5 (the job's: 2)"},
      {[](TargetStoreKey& k) { k.windows = 7; },
       "training windows 6 (the job's: 7)"},
  };
  for (const Case& c : cases) {
    TargetStoreKey expected = key;
    c.change(expected);
    EXPECT_THAT(
        StoreTeacher::Open(dir, expected).status(),
        StatusIs(absl::StatusCode::kFailedPrecondition,
                 HasSubstr("was written for another job: " + c.message)));
  }
  // A job that names no teacher model does not compare the teacher.
  TargetStoreKey unnamed = key;
  unnamed.teacher_sha256.clear();
  EXPECT_THAT(StoreTeacher::Open(dir, unnamed).status(), IsOk());
}

TEST_F(TargetStoreTest, AnUnfinishedWriteLeavesNoStore) {
  const TargetStoreKey key = KeyFor(v1::DENSE_FP16);
  const std::string dir = (scratch_.path() / "store").string();
  {
    auto writer = TargetStoreWriter::Create(dir, key);
    ASSERT_THAT(writer.status(), IsOk());
    ASSERT_THAT((*writer)->Append(Dense(ReferenceProbs().narrow(0, 0, 4))),
                IsOk());
    EXPECT_THAT((*writer)->Finish().status(),
                StatusIs(absl::StatusCode::kFailedPrecondition,
                         HasSubstr("4 of 6 windows written")));
  }
  EXPECT_FALSE(fs::exists(dir));
  EXPECT_THAT(StoreTeacher::Open(dir, key).status(),
              StatusIs(absl::StatusCode::kNotFound,
                       HasSubstr("store.json is missing")));
  EXPECT_THAT(StoreTeacher::Open(dir + ".partial", key).status(),
              StatusIs(absl::StatusCode::kNotFound,
                       HasSubstr("store.json is missing")));
  // A new write replaces the leftover and completes.
  EXPECT_EQ(WriteStore(key, "store"), dir);
  EXPECT_THAT(StoreTeacher::Open(dir, key).status(), IsOk());
  EXPECT_FALSE(fs::exists(dir + ".partial"));
  // A folder named with a trailing slash is written beside, not inside.
  const std::string slashed = (scratch_.path() / "slashed").string() + "/";
  auto writer = TargetStoreWriter::Create(slashed, key);
  ASSERT_THAT(writer.status(), IsOk());
  ASSERT_THAT((*writer)->Append(Dense(ReferenceProbs())), IsOk());
  ASSERT_THAT((*writer)->Finish().status(), IsOk());
  EXPECT_THAT(StoreTeacher::Open(slashed, key).status(), IsOk());
  EXPECT_FALSE(fs::exists(slashed + ".partial"));
  // An existing store is never overwritten.
  EXPECT_THAT(
      TargetStoreWriter::Create(dir, key).status(),
      StatusIs(absl::StatusCode::kAlreadyExists, HasSubstr("already exists")));
}

TEST_F(TargetStoreTest, WritesThatDoNotFitAreRefused) {
  const TargetStoreKey key = KeyFor(v1::TOP_K, 4);
  auto writer =
      TargetStoreWriter::Create((scratch_.path() / "store").string(), key);
  ASSERT_THAT(writer.status(), IsOk());
  losses::TeacherTargets hot = Dense(ReferenceProbs());
  hot.temperature = 1;
  EXPECT_THAT((*writer)->Append(hot),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("at temperature 1 over 50 classes; the store "
                                 "is at temperature 2 over 50")));
  EXPECT_THAT((*writer)->Append(Dense(ReferenceProbs().narrow(1, 0, 4))),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("windows of 5 positions expected")));
  ASSERT_THAT((*writer)->Append(Dense(ReferenceProbs())), IsOk());
  EXPECT_THAT((*writer)->Append(Dense(ReferenceProbs().narrow(0, 0, 1))),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("7 windows appended; the store holds 6")));
  TargetStoreKey no_k = key;
  no_k.top_k = 0;
  EXPECT_THAT(
      TargetStoreWriter::Create((scratch_.path() / "other").string(), no_k)
          .status(),
      StatusIs(absl::StatusCode::kInvalidArgument,
               HasSubstr("top_k 0 does not fit encoding TOP_K")));
}

TEST_F(TargetStoreTest, StoresThatLieAreRefused) {
  const TargetStoreKey key = KeyFor(v1::TOP_K, 4);
  const int64_t record = StoreBytesPerPosition(key) * kSeq;
  auto edit_index = [&](const std::string& dir,
                        const std::function<void(nlohmann::json&)>& edit) {
    nlohmann::json j = nlohmann::json::parse(*ReadFile(dir + "/store.json"));
    edit(j);
    ASSERT_THAT(WriteStringAtomically(dir + "/store.json", j.dump()), IsOk());
  };

  const std::string truncated = WriteStore(key, "truncated");
  fs::resize_file(truncated + "/shard-00001.bin", 2 * record - 1);
  EXPECT_THAT(
      StoreTeacher::Open(truncated, key).status(),
      StatusIs(absl::StatusCode::kDataLoss,
               HasSubstr(absl::StrCat("shard-00001.bin is ", 2 * record - 1,
                                      " bytes; store.json says 2 windows"))));

  const std::string more = WriteStore(key, "more");
  edit_index(more, [](nlohmann::json& j) { j["shards"][2]["windows"] = 1; });
  EXPECT_THAT(StoreTeacher::Open(more, key).status(),
              StatusIs(absl::StatusCode::kDataLoss,
                       HasSubstr("its shards hold 5 windows; its key says 6")));

  // Counts whose byte offsets overflow int64 are refused, not multiplied.
  const std::string huge = WriteStore(key, "huge");
  edit_index(huge, [](nlohmann::json& j) {
    const int64_t n = int64_t{1} << 62;
    j["windows_per_shard"] = n;
    for (auto& shard : j["shards"]) shard["windows"] = n;
  });
  EXPECT_THAT(StoreTeacher::Open(huge, key).status(),
              StatusIs(absl::StatusCode::kDataLoss,
                       HasSubstr("windows_per_shard 4611686018427387904 or "
                                 "windows 6 of")));
  const std::string many = WriteStore(key, "many");
  edit_index(many, [](nlohmann::json& j) {
    const int64_t n = int64_t{1} << 40;
    j["windows_per_shard"] = n;
    for (auto& shard : j["shards"]) shard["windows"] = n;
  });
  EXPECT_THAT(
      StoreTeacher::Open(many, key).status(),
      StatusIs(absl::StatusCode::kDataLoss,
               HasSubstr("its shards hold more windows than its key's 6")));

  const std::string escape = WriteStore(key, "escape");
  edit_index(escape, [](nlohmann::json& j) {
    j["shards"][0]["file"] = "../truncated/shard-00000.bin";
  });
  EXPECT_THAT(
      StoreTeacher::Open(escape, key).status(),
      StatusIs(absl::StatusCode::kDataLoss, HasSubstr("is not a file name")));

  const std::string stride = WriteStore(key, "stride");
  edit_index(stride, [](nlohmann::json& j) { j["record_bytes"] = 1; });
  EXPECT_THAT(StoreTeacher::Open(stride, key).status(),
              StatusIs(absl::StatusCode::kDataLoss,
                       HasSubstr("record_bytes 1; its key makes records")));

  const std::string garbage = WriteStore(key, "garbage");
  ASSERT_THAT(WriteStringAtomically(garbage + "/store.json", "{\"format\":"),
              IsOk());
  EXPECT_THAT(StoreTeacher::Open(garbage, key).status(),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("not JSON")));

  const std::string missing = WriteStore(key, "missing");
  edit_index(missing, [](nlohmann::json& j) { j["key"].erase("seq_len"); });
  EXPECT_THAT(StoreTeacher::Open(missing, key).status(),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("seq_len")));
}

TEST_F(TargetStoreTest, DamagedRecordsAndBadRequestsAreErrors) {
  const TargetStoreKey key = KeyFor(v1::TOP_K, 4);
  const std::string dir = WriteStore(key, "store");
  // Window 3 is the second of shard 1; its tail masses are its last
  // 4 x kSeq bytes. A NaN tail is not a distribution.
  const int64_t record = StoreBytesPerPosition(key) * kSeq;
  {
    std::fstream f(dir + "/shard-00001.bin",
                   std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(2 * record - 4);
    const float nan = std::nanf("");
    f.write(reinterpret_cast<const char*>(&nan), 4);
  }
  auto store = StoreTeacher::Open(dir, key);
  ASSERT_THAT(store.status(), IsOk());
  EXPECT_THAT((*store)->Targets(BatchOf({0, 3, 5}), kT).status(),
              StatusIs(absl::StatusCode::kDataLoss,
                       HasSubstr("window 3 does not decode")));
  EXPECT_THAT((*store)->Targets(BatchOf({0, 2}), kT).status(), IsOk());
  EXPECT_THAT((*store)->Targets(BatchOf({6}), kT).status(),
              StatusIs(absl::StatusCode::kOutOfRange,
                       HasSubstr("holds windows [0, 6); asked for window 6")));
  EXPECT_THAT((*store)->Targets(BatchOf({0}), 1.0).status(),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       HasSubstr("at temperature 2, not 1")));
  EXPECT_EQ((*store)->any_input_teacher(), nullptr);
}

}  // namespace
}  // namespace distill::trainer
