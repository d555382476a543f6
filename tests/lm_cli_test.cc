// Language-model jobs through the `distill` binary as a user runs them:
// text prepared by distill_prepare_text (the real spm_* commands) on real
// text, a gpt trained on it, a smaller one distilled from it, and every bad
// input refused with one line, exit 1 and nothing written.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/testing/process.h"
#include "common/testing/run_files.h"
#include "common/testing/scratch_dir.h"

namespace {

namespace fs = std::filesystem;
using ::distill::testing::BinDir;
using ::distill::testing::Outcome;
using ::distill::testing::RunShell;
using ::distill::testing::ScratchDirTest;
using ::distill::testing::Summary;
using ::testing::HasSubstr;

constexpr int kVocab = 300;

// A tiny gpt: 2 layers of width 32 over windows of 32 tokens.
constexpr char kTinyGpt[] = R"pb(
  arch: "gpt"
  options { key: "layers" value: 2 }
  options { key: "heads" value: 2 }
  options { key: "d_model" value: 32 }
  options { key: "d_ff" value: 64 }
  options { key: "context" value: 32 }
)pb";

// A token file's ids, read here from its documented layout
// (data/token_file.h): a 64-byte header whose bytes 12..15 give the bytes
// per id and 24..31 the count, little endian.
std::vector<int64_t> ReadIds(const fs::path& file) {
  std::ifstream in(file, std::ios::binary);
  std::vector<unsigned char> bytes((std::istreambuf_iterator<char>(in)),
                                   std::istreambuf_iterator<char>());
  auto field = [&](int at, int size) {
    int64_t v = 0;
    for (int i = size - 1; i >= 0; --i) v = v * 256 + bytes.at(at + i);
    return v;
  };
  const int64_t width = field(12, 4), count = field(24, 8);
  std::vector<int64_t> ids(count);
  for (int64_t i = 0; i < count; ++i) ids[i] = field(64 + i * width, width);
  return ids;
}

// The perplexity ONNX Runtime's logits give on `ids` in windows of
// `seq_len` (stride seq_len, each predicting the next tokens; the last
// right-padded with 0 and its padding not scored), computed here.
double OrtPerplexity(const fs::path& model, const std::vector<int64_t>& ids,
                     int64_t seq_len, int64_t vocab, const fs::path& dir) {
  const int64_t count = static_cast<int64_t>(ids.size());
  const int64_t windows = (count - 2) / seq_len + 1;
  std::vector<int64_t> inputs(windows * seq_len, 0);
  for (int64_t i = 0; i + 1 < count; ++i) inputs[i] = ids[i];
  {
    std::ofstream out(dir / "windows.bin", std::ios::binary);
    out.write(reinterpret_cast<const char*>(inputs.data()),
              inputs.size() * sizeof(int64_t));
  }
  const Outcome ort = RunShell(
      std::string(DISTILL_NODE) + " " + DISTILL_SOURCE_DIR +
          "/tests/onnx/run_model.js --dtype int64 --model " + model.string() +
          " --input " + (dir / "windows.bin").string() + " --shape " +
          std::to_string(windows) + "," + std::to_string(seq_len) +
          " --output " + (dir / "logits.bin").string(),
      dir);
  EXPECT_EQ(ort.exit_code, 0) << ort.err;
  std::ifstream in(dir / "logits.bin", std::ios::binary);
  std::vector<float> logits(windows * seq_len * vocab);
  in.read(reinterpret_cast<char*>(logits.data()),
          logits.size() * sizeof(float));
  EXPECT_TRUE(in) << "ONNX Runtime wrote too few logits";
  double nll = 0;
  for (int64_t i = 0; i + 1 < count; ++i) {
    const float* row = logits.data() + i * vocab;
    const double top = *std::max_element(row, row + vocab);
    double sum = 0;
    for (int64_t v = 0; v < vocab; ++v) sum += std::exp(row[v] - top);
    nll += top + std::log(sum) - row[ids[i + 1]];
  }
  return std::exp(nll / (count - 1));
}

class LmCliTest : public ScratchDirTest {
 protected:
  Outcome Run(const std::string& args) {
    return RunShell(BinDir() + "/distill " + args, dir_);
  }

  // Prepares the licence texts every Debian system has into `name`/ with a
  // vocabulary of `vocab`.
  fs::path Prepare(const std::string& name, int vocab = kVocab) {
    const fs::path corpus = dir_ / "corpus";
    if (!fs::exists(corpus)) {
      fs::create_directories(corpus);
      for (const char* text : {"GPL-3", "Apache-2.0", "GPL-2", "LGPL-2.1"}) {
        fs::copy_file(fs::path("/usr/share/common-licenses") / text,
                      corpus / text);
      }
    }
    const fs::path out = dir_ / name;
    const Outcome o =
        RunShell(BinDir() + "/distill_prepare_text --corpus " +
                     corpus.string() + " --out_dir " + out.string() +
                     " --vocab_size " + std::to_string(vocab),
                 dir_);
    EXPECT_EQ(o.exit_code, 0) << o.err;
    return out;
  }

  // The token count a token file's header declares (bytes 24..31, little
  // endian), read here without the framework's reader.
  static int64_t TokenCount(const fs::path& file) {
    std::ifstream in(file, std::ios::binary);
    unsigned char header[64] = {};
    in.read(reinterpret_cast<char*>(header), sizeof(header));
    int64_t count = 0;
    for (int i = 7; i >= 0; --i) count = count * 256 + header[24 + i];
    return count;
  }

  // A config of `mode` on windows of `seq_len` tokens from `data`;
  // `data_extra` goes into its data section, `rest` after it.
  std::string Config(const std::string& mode, const fs::path& data,
                     const std::string& student, const std::string& rest,
                     const std::string& data_extra = "seq_len: 32") {
    return "mode: " + mode + "\ndata { dataset: \"tokens\" dir: \"" +
           data.string() + "\" " + data_extra + " }\nstudent {" + student +
           "}\n" + "batch_size: 16 threads: 1 seed: 3 log_every_steps: 1000\n" +
           "optimizer { type: ADAMW lr: 0.003 }\n" + rest;
  }

  // Runs a config expected to be refused: exit 1, one line naming the
  // problem, no run directory.
  void ExpectRefused(const std::string& config, const std::string& error) {
    const fs::path file = Write("bad.pbtxt", config);
    const fs::path run = dir_ / "refused";
    const Outcome o =
        Run("--config " + file.string() + " --run_dir " + run.string());
    EXPECT_EQ(o.exit_code, 1) << o.err;
    EXPECT_THAT(o.err, HasSubstr(error));
    EXPECT_EQ(std::count(o.err.begin(), o.err.end(), '\n'), 1) << o.err;
    EXPECT_FALSE(fs::exists(run));
  }
};

TEST_F(LmCliTest, TrainsATeacherAndDistillsAStudentFromIt) {
  const fs::path data = Prepare("tokens");
  const fs::path teacher_run = dir_ / "teacher";
  const fs::path teacher_config =
      Write("teacher.pbtxt", Config("TRAIN", data, kTinyGpt, "epochs: 3\n"));
  Outcome o = Run("--quiet --config " + teacher_config.string() +
                  " --run_dir " + teacher_run.string());
  ASSERT_EQ(o.exit_code, 0) << o.err;
  const nlohmann::json teacher = Summary(teacher_run);
  // Every test token but the first is predicted once (stride = seq_len).
  EXPECT_EQ(teacher["test_tokens"], TokenCount(data / "test.tok") - 1);
  EXPECT_EQ(teacher["validation_tokens"], TokenCount(data / "valid.tok") - 1);
  // Far better than guessing among the vocabulary.
  EXPECT_LT(teacher["test_perplexity"].get<double>(), kVocab / 4.0);
  EXPECT_GT(teacher["test_perplexity"].get<double>(), 1.0);
  EXPECT_NEAR(std::log(teacher["test_perplexity"].get<double>()),
              teacher["test_loss"].get<double>(), 1e-6);
  EXPECT_GT(teacher["tokens_per_sec"].get<double>(), 0);

  const fs::path student_run = dir_ / "student";
  const fs::path student_config =
      Write("student.pbtxt",
            Config("DISTILL", data,
                   R"pb(arch: "gpt"
                  options { key: "layers" value: 1 }
                  options { key: "d_model" value: 32 }
                  options { key: "heads" value: 2 }
                  options { key: "context" value: 32 })pb",
                   "epochs: 1\nloss_chunk_tokens: 100\nteacher { model {" +
                       std::string(kTinyGpt) + " weights: \"" +
                       (teacher_run / "model.pt").string() + "\" } }\n"));
  o = Run("--quiet --config " + student_config.string() + " --run_dir " +
          student_run.string());
  ASSERT_EQ(o.exit_code, 0) << o.err;
  const nlohmann::json student = Summary(student_run);
  EXPECT_EQ(student["test_tokens"], teacher["test_tokens"]);
  ASSERT_TRUE(student.contains("validation_teacher_agreement")) << student;
  const double agreement = student["validation_teacher_agreement"];
  EXPECT_GT(agreement, 0.0);
  EXPECT_LE(agreement, 1.0);
  EXPECT_TRUE(student["loss_terms"].contains("kd_kl")) << student;
  EXPECT_LT(student["test_perplexity"].get<double>(), kVocab / 2.0);
}

// The QAT stage on a trained gpt: six forms and the FP32 control measured
// on the test windows,
// with the weight bytes each would store, counted here by hand for
// kTinyGpt at V = 300 (tied head): weight matrices wte 300x32, wpe 32x32,
// and per layer qkv 96x32, attn.proj 32x32, fc 64x32, proj 32x64 — 27,008
// weights in 780 rows — and 768 bias and LayerNorm values.
TEST_F(LmCliTest, QuantizesAGptStudentSixWaysWithAControl) {
  auto report_of = [](const fs::path& run) {
    return nlohmann::json::parse(
        std::ifstream(run / "qat" / "quantization_report.json"));
  };
  const fs::path data = Prepare("tokens");
  const fs::path trained = dir_ / "trained";
  Outcome o =
      Run("--quiet --config " +
          Write("train.pbtxt", Config("TRAIN", data, kTinyGpt, "epochs: 2\n"))
              .string() +
          " --run_dir " + trained.string());
  ASSERT_EQ(o.exit_code, 0) << o.err;
  const nlohmann::json summary = Summary(trained);

  const fs::path run = dir_ / "quantized";
  const std::string student = std::string(kTinyGpt) + " weights: \"" +
                              (trained / "model.pt").string() + "\"";
  o = Run("--config " +
          Write("qat.pbtxt",
                Config("QUANTIZE", data, student,
                       "qat { calibration_batches: 4 epochs: 1 lr: 0.001 "
                       "group_size: 32 awq_rows: 512 }\n"
                       "loss { name: \"kd_kl\" weight: 0.5 }\n"
                       "loss { name: \"hard_ce\" weight: 0.5 }\n"
                       "teacher { model {" +
                           student + " } }\n"))
              .string() +
          " --run_dir " + run.string());
  ASSERT_EQ(o.exit_code, 0) << o.err;
  EXPECT_THAT(o.out, HasSubstr("4-bit AWQ"));
  const nlohmann::json report = report_of(run);
  // The teacher (here the trained model itself) guided every fine-tuning.
  for (const char* tune : {"qat int8", "qat 4-bit", "fp32 control"}) {
    EXPECT_TRUE(
        report["fine_tuning"][tune]["last_epoch_loss_terms"].contains("kd_kl"))
        << tune;
  }
  const nlohmann::json& rows = report["rows"];
  ASSERT_EQ(rows.size(), 7u) << report;
  const char* names[] = {"FP32",      "INT8 PTQ",  "INT8 QAT",  "4-bit RTN",
                         "4-bit AWQ", "4-bit QAT", "FP32 tuned"};
  for (int i = 0; i < 7; ++i) EXPECT_EQ(rows[i]["name"], names[i]);
  // The control is the FP32 model fine-tuned as the QAT rows were: float
  // weight bytes, and a perplexity of its own.
  EXPECT_EQ(rows[6]["weight_bytes"], rows[0]["weight_bytes"]);
  EXPECT_NE(rows[6]["perplexity"], rows[0]["perplexity"]);
  EXPECT_NEAR(
      report["goals"]["int8"]["perplexity_vs_fp32_tuned"].get<double>(),
      rows[2]["perplexity"].get<double>() / rows[6]["perplexity"].get<double>(),
      1e-12);
  // The FP32 row is the trained model as its own run measured it.
  EXPECT_NEAR(rows[0]["perplexity"].get<double>(),
              summary["test_perplexity"].get<double>(), 1e-6);
  const int64_t weights = 27008, matrix_rows = 780, others = 768;
  EXPECT_EQ(rows[0]["weight_bytes"], 4 * (weights + others));
  EXPECT_EQ(rows[1]["weight_bytes"], weights + 4 * matrix_rows + 4 * others);
  EXPECT_EQ(rows[3]["weight_bytes"],
            weights / 2 + 4 * (weights / 32) + 4 * others);
  // AWQ-style scales: one float per input of each Linear layer whose search
  // chose α > 0 (widths 32, 32, 32 and 64 a layer); the tied head keeps
  // round-to-nearest.
  const std::map<std::string, int64_t> widths = {
      {"attn.qkv", 32}, {"attn.proj", 32}, {"fc", 32}, {"proj", 64}};
  int64_t scale_floats = 0;
  ASSERT_EQ(report["awq_search"].size(), 8u) << report["awq_search"];
  for (const auto& [layer, search] : report["awq_search"].items()) {
    ASSERT_EQ(layer.rfind("blocks.", 0), 0u) << layer;
    if (search["alpha"].get<double>() > 0) {
      scale_floats += widths.at(layer.substr(layer.find('.', 7) + 1));
    }
  }
  EXPECT_EQ(rows[4]["weight_bytes"],
            rows[3]["weight_bytes"].get<int64_t>() + 4 * scale_floats);
  // Quantization moves the model, INT8 a little, 4-bit round-to-nearest more.
  const double fp32 = rows[0]["perplexity"];
  EXPECT_NE(rows[1]["perplexity"].get<double>(), fp32);
  EXPECT_LT(rows[1]["perplexity"].get<double>(), 1.10 * fp32);
  EXPECT_GT(rows[3]["perplexity"].get<double>(), fp32);
  // Every test position falls in one frequency bucket; the rare bucket is
  // about a tenth of the text.
  for (const auto& row : rows) {
    const auto& b = row["loss_by_token_frequency"];
    const int64_t total = b["frequent"]["tokens"].get<int64_t>() +
                          b["middle"]["tokens"].get<int64_t>() +
                          b["rare"]["tokens"].get<int64_t>();
    EXPECT_EQ(total, summary["test_tokens"].get<int64_t>());
    const double rare = b["rare"]["tokens"].get<double>() / total;
    EXPECT_GT(rare, 0.03);
    EXPECT_LT(rare, 0.3);
    // Rare tokens are harder to predict.
    EXPECT_GT(b["rare"]["loss"].get<double>(),
              b["frequent"]["loss"].get<double>());
  }
  EXPECT_TRUE(fs::exists(run / "qat" / "student_int8_qat_weights.pt"));
  EXPECT_TRUE(fs::exists(run / "qat" / "student_4bit_qat_weights.pt"));
  EXPECT_EQ(Summary(run)["qat"]["perplexity"]["4-bit QAT"],
            rows[5]["perplexity"]);

  // The exports, run in ONNX Runtime over the test windows, score what the
  // stage's fake-quantized models scored.
  ASSERT_FALSE(std::string(DISTILL_NODE).empty())
      << "node not found: run launch/install_deps.sh";
  const std::vector<int64_t> test_ids = ReadIds(data / "test.tok");
  for (int i = 0; i < 6; ++i) {
    SCOPED_TRACE(rows[i]["name"].get<std::string>());
    const nlohmann::json& file = rows[i]["onnx_file"];
    ASSERT_TRUE(file.is_object()) << rows[i];
    const fs::path onnx = run / "qat" / file["name"].get<std::string>();
    EXPECT_EQ(static_cast<int64_t>(fs::file_size(onnx)), file["bytes"]);
    const double ort = OrtPerplexity(onnx, test_ids, 32, kVocab, dir_);
    const double stage = rows[i]["perplexity"];
    EXPECT_NEAR(ort / stage, 1.0, 0.01) << "ONNX Runtime " << ort;
    // The file holds the weights as the row counts them and a graph: the
    // FP32 file's graph (nodes, names, the 32 x 32 float mask), plus the
    // quantize nodes and their constants, under 9,000 bytes here. A second
    // copy of the embedding would exceed it (9,600 bytes in int8).
    const int64_t bytes = file["bytes"], weight_bytes = rows[i]["weight_bytes"];
    const int64_t fp32_graph = rows[0]["onnx_file"]["bytes"].get<int64_t>() -
                               rows[0]["weight_bytes"].get<int64_t>();
    EXPECT_GE(bytes, weight_bytes);
    EXPECT_LE(bytes - weight_bytes, fp32_graph + 9000);
  }
  EXPECT_EQ(rows[6]["onnx_file"], nullptr);

  // A group size that does not divide a layer's width: one line, before
  // any work.
  ExpectRefused(Config("QUANTIZE", data, student,
                       "qat { group_size: 64 teacher_guided: false }\n"),
                "qat.group_size: group size 64 does not divide the input "
                "width 32 of layer 'blocks.0.attn.qkv'");
}

TEST_F(LmCliTest, BadInputIsOneLineAndWritesNothing) {
  const fs::path data = Prepare("tokens");
  // Windows longer than the model's context.
  ExpectRefused(Config("TRAIN", data, kTinyGpt, "", "seq_len: 64"), "context");
  // An image model on token windows, and a language model on images.
  ExpectRefused(Config("TRAIN", data, "arch: \"mlp\"", ""),
                "is an image model but the data are token windows");
  ExpectRefused(std::string("mode: TRAIN\nstudent {") + kTinyGpt + "}\n",
                "language model");
  // Teacher servers' targets are not cached for language models yet.
  ExpectRefused(
      Config("DISTILL", data, kTinyGpt,
             "teacher { endpoints: \"localhost:1\" cache { mode: MEMORY } }\n"),
      "teacher.cache.mode");

  // A teacher trained with another tokenizer's vocabulary.
  const fs::path other = Prepare("other", 400);
  const fs::path teacher_run = dir_ / "teacher400";
  const fs::path config =
      Write("teacher400.pbtxt", Config("TRAIN", other, kTinyGpt, "epochs: 1\n",
                                       "seq_len: 32 train_limit: 4"));
  Outcome o = Run("--quiet --config " + config.string() + " --run_dir " +
                  teacher_run.string());
  ASSERT_EQ(o.exit_code, 0) << o.err;
  // A language-model teacher for an image student.
  ExpectRefused(std::string("mode: DISTILL\nstudent { arch: \"mlp\" }\n") +
                    "teacher { model {" + kTinyGpt + " weights: \"" +
                    (teacher_run / "model.pt").string() + "\" } }\n",
                "language model");
  ExpectRefused(
      Config("DISTILL", data, kTinyGpt,
             "teacher { model {" + std::string(kTinyGpt) + " weights: \"" +
                 (teacher_run / "model.pt").string() + "\" } }\n"),
      "[400, 32]");

  // Splits from two tokenizers in one folder.
  fs::copy_file(other / "valid.tok", data / "valid.tok",
                fs::copy_options::overwrite_existing);
  ExpectRefused(Config("TRAIN", data, kTinyGpt, ""), "different tokenizers");

  // A token id >= the vocabulary, written over the first id of test.tok.
  const fs::path fresh = Prepare("fresh");
  {
    std::fstream f(fresh / "test.tok",
                   std::ios::binary | std::ios::in | std::ios::out);
    f.seekp(64);
    const unsigned char id[2] = {0xff, 0x7f};  // 32767
    f.write(reinterpret_cast<const char*>(id), 2);
  }
  ExpectRefused(Config("TRAIN", fresh, kTinyGpt, ""), "32767");
  // A truncated token file.
  fs::resize_file(fresh / "train.tok", fs::file_size(fresh / "train.tok") - 1);
  ExpectRefused(Config("TRAIN", fresh, kTinyGpt, ""), "train.tok");
}

}  // namespace
