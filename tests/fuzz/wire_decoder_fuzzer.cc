// Fuzzes what the trainer does with a teacher server's answer: the chunks
// of one batch put back together (teacher::JoinAnswer) and the targets
// decoded and checked (teacher::DecodeTargets). The input is records in
// fuzz_support.h's framing: the first record's first byte picks the batch
// size the answer must cover (0: any), the others are DistillResponse
// messages as they came off the wire. Whatever a server sends, the result
// is targets the losses can use (the contract in teacher_server/codec.h),
// or an error; never a crash or an abort.
#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <vector>

#include "losses/teacher_targets.h"
#include "proto/teacher.pb.h"
#include "teacher_server/chunks.h"
#include "teacher_server/codec.h"
#include "tests/fuzz/fuzz_support.h"

namespace {

namespace v1 = distill::v1;
using distill::fuzz::Fail;
using distill::losses::TeacherTargets;

constexpr char kTarget[] = "wire_decoder_fuzzer";

// What DecodeTargets promises of targets it returns.
void CheckTargets(const TeacherTargets& t, int64_t expected_rows) {
  if (t.num_classes < 1) Fail(kTarget, "num_classes < 1");
  if (!(t.temperature > 0) || !std::isfinite(t.temperature)) {
    Fail(kTarget, "temperature not finite and > 0");
  }
  if (expected_rows >= 0 && t.batch_size() != expected_rows) {
    Fail(kTarget, "targets cover another batch size than asked");
  }
  const torch::Tensor& p =
      t.form == TeacherTargets::Form::kDense ? t.probs : t.values;
  if (p.scalar_type() != torch::kFloat)
    Fail(kTarget, "probabilities not float32");
  if (p.numel() > 0) {
    if (!torch::isfinite(p).all().item<bool>())
      Fail(kTarget, "non-finite probability");
    if (p.min().item<float>() < 0 || p.max().item<float>() > 1) {
      Fail(kTarget, "probability outside [0, 1]");
    }
  }
  if (t.form == TeacherTargets::Form::kDense) {
    if (p.dim() < 2 || p.size(-1) != t.num_classes) {
      Fail(kTarget, "dense rows are not num_classes wide");
    }
    return;
  }
  if (t.indices.sizes() != t.values.sizes())
    Fail(kTarget, "indices and values differ in shape");
  if (t.indices.numel() > 0 &&
      (t.indices.min().item<int64_t>() < 0 ||
       t.indices.max().item<int64_t>() >= t.num_classes)) {
    Fail(kTarget, "class index outside [0, num_classes)");
  }
}

void WriteSeeds(const std::string& dir) {
  torch::manual_seed(7);
  const torch::Tensor image_logits = torch::randn({3, 10}) * 4;
  // Language-model answers large enough to travel as several chunks.
  const torch::Tensor lm_logits = torch::randn({1, 4, 1000}) * 4;
  const torch::Tensor long_logits = torch::randn({2, 100, 50}) * 4;
  struct Seed {
    std::string name;
    TeacherTargets targets;
    v1::Encoding encoding;
    int64_t max_bytes;  // 0: one message
  };
  const std::vector<Seed> seeds = {
      {"dense_fp32", TeacherTargets::DenseFromLogits(image_logits, 2.0),
       v1::DENSE_FP32, 0},
      {"dense_fp16", TeacherTargets::DenseFromLogits(image_logits, 1.0),
       v1::DENSE_FP16, 0},
      {"topk", TeacherTargets::TopKFromLogits(image_logits, 4.0, 3), v1::TOP_K,
       0},
      {"sampled", TeacherTargets::SampledFromLogits(image_logits, 1.0, 8),
       v1::SAMPLED, 0},
      {"lm_dense_chunks", TeacherTargets::DenseFromLogits(lm_logits, 1.0),
       v1::DENSE_FP16, 4096 + 2 * 1000 * 2},
      {"lm_topk_chunks", TeacherTargets::TopKFromLogits(long_logits, 1.0, 4),
       v1::TOP_K, 4096 + 60 * 28},
      {"dense_logp_fp16", TeacherTargets::DenseFromLogits(image_logits, 1.0),
       v1::DENSE_LOGP_FP16, 0},
      {"topk_packed", TeacherTargets::TopKFromLogits(image_logits, 4.0, 3),
       v1::TOP_K_PACKED, 0},
      // 8 + 4 x 6 bits / 8 + 4 record bytes and a 4-byte tail a row.
      {"lm_topk_packed_chunks",
       TeacherTargets::TopKFromLogits(long_logits, 1.0, 4), v1::TOP_K_PACKED,
       4096 + 60 * 19},
  };
  for (const Seed& seed : seeds) {
    auto message = distill::teacher::EncodeTargets(seed.targets, seed.encoding);
    if (!message.ok()) Fail(kTarget, message.status().ToString());
    auto chunks = distill::teacher::SplitAnswer(9, *message, seed.max_bytes);
    if (!chunks.ok()) Fail(kTarget, chunks.status().ToString());
    std::vector<std::string> records = {
        std::string(1, static_cast<char>(seed.targets.batch_size() + 1))};
    for (const v1::DistillResponse& chunk : *chunks) {
      records.push_back(chunk.SerializeAsString());
    }
    distill::fuzz::WriteSeed(dir, seed.name,
                             distill::fuzz::JoinRecords(records));
  }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int* argc, char*** argv) {
  distill::fuzz::WriteSeedsIfAsked(*argc, *argv, WriteSeeds);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::vector<std::string> records =
      distill::fuzz::SplitRecords(data, size, 65);
  if (records.size() < 2) return 0;
  const int64_t expected_rows =
      records[0].empty() ? -1 : static_cast<uint8_t>(records[0][0]) - 1;
  std::vector<v1::DistillResponse> chunks(records.size() - 1);
  for (size_t i = 1; i < records.size(); ++i) {
    if (!chunks[i - 1].ParseFromString(records[i])) return 0;
  }
  v1::DistillResponse answer;
  if (chunks.size() == 1) {
    answer = chunks[0];
  } else {
    auto joined = distill::teacher::JoinAnswer(chunks);
    if (!joined.ok()) return 0;
    answer = *std::move(joined);
  }
  auto targets =
      distill::teacher::DecodeTargets(answer.targets(), expected_rows);
  if (targets.ok()) CheckTargets(*targets, expected_rows);
  return 0;
}
