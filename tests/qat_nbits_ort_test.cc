// Quantized exports run in ONNX Runtime (npm's onnxruntime-node,
// tests/onnx/run_model.js and greedy.js) against LibTorch. Whole gpt
// language models (student/qat/onnx_gpt.h) in FP32, INT8 QDQ and 4-bit
// MatMulNBits forms must give the fake-quantized model's logits and greedy
// tokens. Group-wise quantized Linear layers exported as ONNX Runtime's
// MatMulNBits (student/qat/onnx_nbits.h): the runtime's product must be
// LibTorch's x · FakeQuantGroupwise(W)ᵀ + b, for 4 bits (all that ONNX
// Runtime 1.20's MatMulNBits runs), symmetric and with zero points, an odd
// number of groups a row (the zero points' padding) and one group a row. A
// wrong byte order, nibble order or zero-point layout puts whole groups off by
// a scale or more.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "common/testing/process.h"
#include "common/testing/scratch_dir.h"
#include "common/testing/status_matchers.h"
#include "nlohmann/json.hpp"
#include "student/gpt.h"
#include "student/qat/gpt_quant.h"
#include "student/qat/group_quant.h"
#include "student/qat/onnx_gpt.h"
#include "student/qat/onnx_nbits.h"

namespace distill::student::qat {
namespace {

namespace fs = std::filesystem;
using ::distill::testing::Outcome;
using ::distill::testing::RunShell;
using ::distill::testing::ScratchDirTest;
using ::distill::testing::StatusIs;

void WriteFloats(const fs::path& path, const torch::Tensor& t) {
  const torch::Tensor c = t.to(torch::kFloat32).contiguous();
  std::ofstream(path, std::ios::binary)
      .write(reinterpret_cast<const char*>(c.data_ptr<float>()),
             c.numel() * sizeof(float));
}

torch::Tensor ReadFloats(const fs::path& path, std::vector<int64_t> shape) {
  std::ifstream in(path, std::ios::binary);
  std::vector<char> bytes((std::istreambuf_iterator<char>(in)),
                          std::istreambuf_iterator<char>());
  torch::Tensor t = torch::empty(shape, torch::kFloat32);
  EXPECT_EQ(static_cast<int64_t>(bytes.size()),
            t.numel() * static_cast<int64_t>(sizeof(float)));
  std::memcpy(t.data_ptr<float>(), bytes.data(),
              std::min<size_t>(bytes.size(), t.numel() * sizeof(float)));
  return t;
}

class MatMulNBitsOrtTest : public ScratchDirTest {};

// A gpt with weights large enough that its logits are far apart (GPT-2's
// 0.02 initialization gives nearly equal ones, where greedy ties are noise).
Gpt SharpGpt(bool tied) {
  GptOptions o;
  o.tied_embedding = tied;
  o.vocab_size = 64;
  o.context = 16;
  o.layers = 2;
  o.heads = 2;
  o.d_model = 32;
  o.d_ff = 64;
  Gpt model(o);
  torch::NoGradGuard no_grad;
  for (auto& p : model->named_parameters()) {
    if (p.key().find("ln") != std::string::npos) continue;
    p.value().normal_(0, 0.3);
  }
  model->train(false);
  return model;
}

class GptOrtTest : public ScratchDirTest {
 protected:
  // ONNX Runtime's logits [rows, 16, 64] for `tokens` [rows, 16].
  torch::Tensor OrtLogits(const fs::path& model, const torch::Tensor& tokens) {
    const torch::Tensor ids = tokens.to(torch::kLong).contiguous();
    std::ofstream(dir_ / "tokens.bin", std::ios::binary)
        .write(reinterpret_cast<const char*>(ids.data_ptr<int64_t>()),
               ids.numel() * sizeof(int64_t));
    const Outcome ort =
        RunShell(std::string(DISTILL_NODE) + " " + Script("run_model.js") +
                     " --dtype int64 --model " + model.string() + " --input " +
                     (dir_ / "tokens.bin").string() + " --shape " +
                     std::to_string(ids.size(0)) + ",16 --output " +
                     (dir_ / "logits.bin").string(),
                 dir_);
    EXPECT_EQ(ort.exit_code, 0) << ort.err;
    return ReadFloats(dir_ / "logits.bin", {ids.size(0), 16, 64});
  }

  // Greedy continuation of `prompt` by ONNX Runtime.
  std::vector<int64_t> OrtGreedy(const fs::path& model,
                                 const std::vector<int64_t>& prompt,
                                 int steps) {
    std::string list;
    for (int64_t t : prompt)
      list += (list.empty() ? "" : ",") + std::to_string(t);
    const Outcome ort =
        RunShell(std::string(DISTILL_NODE) + " " + Script("greedy.js") +
                     " --model " + model.string() + " --length 16 --prompt " +
                     list + " --steps " + std::to_string(steps),
                 dir_);
    EXPECT_EQ(ort.exit_code, 0) << ort.err;
    return nlohmann::json::parse(ort.out)["tokens"].get<std::vector<int64_t>>();
  }

  void RunEveryForm(bool tied);

  static std::string Script(const std::string& name) {
    return (fs::path(DISTILL_SOURCE_DIR) / "tests/onnx" / name).string();
  }
};

// Bytes of the int8 and uint8 initializers of more than one value (the
// quantized matrices and their zero points), and the names of the float
// initializers of two or more dimensions.
int64_t QuantizedBytes(const onnx::ModelProto& model) {
  int64_t bytes = 0;
  for (const auto& init : model.graph().initializer()) {
    const bool quantized = init.data_type() == onnx::TensorProto::INT8 ||
                           init.data_type() == onnx::TensorProto::UINT8;
    if (quantized && init.raw_data().size() > 1)
      bytes += init.raw_data().size();
  }
  return bytes;
}

std::vector<std::string> FloatMatrices(const onnx::ModelProto& model) {
  std::vector<std::string> names;
  for (const auto& init : model.graph().initializer()) {
    if (init.data_type() == onnx::TensorProto::FLOAT && init.dims_size() >= 2) {
      names.push_back(init.name());
    }
  }
  return names;
}

// The same continuation by LibTorch, the model as it is quantized now.
std::vector<int64_t> TorchGreedy(Gpt& model, std::vector<int64_t> tokens,
                                 int steps) {
  torch::NoGradGuard no_grad;
  for (int i = 0; i < steps && tokens.size() < 16; ++i) {
    const torch::Tensor logits =
        model->forward(torch::tensor(tokens, torch::kLong).unsqueeze(0));
    tokens.push_back(logits[0][-1].argmax().item<int64_t>());
  }
  return tokens;
}

TEST_F(GptOrtTest, EveryFormRunsInOnnxRuntimeAsInLibTorch) {
  for (bool tied : {true, false}) {
    SCOPED_TRACE(tied ? "tied head" : "own head");
    RunEveryForm(tied);
  }
}

void GptOrtTest::RunEveryForm(bool tied) {
  ASSERT_FALSE(std::string(DISTILL_NODE).empty())
      << "node not found: run launch/install_deps.sh";
  torch::manual_seed(5);
  Gpt model = SharpGpt(tied);
  // What each form stores, counted from the matrices: a byte a weight and
  // a zero point a row for int8; half a byte a weight, and a zero-point
  // byte per two groups of a row (rounded up), for 4 bits.
  int64_t weights = 0, rows = 0, zero_bytes = 0;
  for (const auto& p : model->named_parameters()) {
    if (p.value().dim() != 2) continue;
    weights += p.value().numel();
    rows += p.value().size(0);
    zero_bytes += p.value().size(0) * ((p.value().size(1) / 32 + 1) / 2);
  }
  const torch::Tensor tokens = torch::randint(0, 64, {6, 16}, torch::kLong);
  const std::vector<int64_t> prompt = {3, 17, 40, 9};
  struct Case {
    std::string label;
    GptOnnxForm form;
    GroupQuantSpec spec;
    bool awq;
  };
  const std::vector<Case> cases = {
      {"fp32", GptOnnxForm::kFloat, {4, 32, true}, false},
      {"int8", GptOnnxForm::kInt8, {4, 32, true}, false},
      {"4-bit symmetric", GptOnnxForm::kNBits, {4, 32, true}, false},
      {"4-bit zero points, AWQ", GptOnnxForm::kNBits, {4, 32, false}, true},
  };
  torch::Tensor float_logits;
  {
    torch::NoGradGuard no_grad;
    float_logits = model->forward(tokens);
  }
  for (const Case& c : cases) {
    SCOPED_TRACE(c.label);
    GptQuantOptions options;
    options.group = c.spec;
    auto quant = GptQuant::Create(model, options);
    ASSERT_TRUE(quant.ok()) << quant.status();
    GptQuant& q = **quant;
    {
      torch::NoGradGuard no_grad;
      if (c.form == GptOnnxForm::kInt8) {
        q.SetMode(GptQuantMode::kInt8);
        q.SetObserving(true);
        model->forward(torch::randint(0, 64, {8, 16}, torch::kLong));
        q.SetObserving(false);
        q.SetActivationQuant(true);
      }
      if (c.awq) {
        q.StartCapture(256);
        for (int i = 0; i < 8; ++i) {
          model->forward(torch::randint(0, 64, {4, 16}, torch::kLong));
        }
        q.StopCapture();
        q.SearchAwq();
        ASSERT_TRUE(q.AwqScales("blocks.0.fc").defined() ||
                    q.AwqScales("blocks.0.attn.qkv").defined());
      }
      if (c.form == GptOnnxForm::kNBits) q.SetMode(GptQuantMode::kGroupwise);
    }
    auto onnx = BuildGptOnnx(model, q, c.form, 16);
    ASSERT_TRUE(onnx.ok()) << onnx.status();
    // Every matrix stored once, in its quantized form.
    if (c.form == GptOnnxForm::kInt8) {
      EXPECT_EQ(QuantizedBytes(*onnx), weights + rows);
    }
    if (c.form == GptOnnxForm::kNBits) {
      EXPECT_EQ(QuantizedBytes(*onnx),
                weights / 2 + (c.spec.symmetric ? 0 : zero_bytes));
    }
    if (c.form != GptOnnxForm::kFloat) {
      EXPECT_EQ(FloatMatrices(*onnx), std::vector<std::string>{"causal_mask"});
    }
    const fs::path file = dir_ / "gpt.onnx";
    {
      std::ofstream out(file, std::ios::binary);
      ASSERT_TRUE(onnx->SerializeToOstream(&out));
    }
    torch::Tensor want;
    {
      torch::NoGradGuard no_grad;
      want = model->forward(tokens);
    }
    const torch::Tensor got = OrtLogits(file, tokens);
    const double error = (got - want).abs().max().item<double>();
    const double mean_error = (got - want).abs().mean().item<double>();
    const double scale = want.abs().max().item<double>();
    std::printf(
        "%s: ONNX Runtime's logits off by %.3g at most, %.3g on "
        "average (largest logit %.3g)\n",
        c.label.c_str(), error, mean_error, scale);
    if (c.form == GptOnnxForm::kInt8) {
      // ONNX Runtime fuses the QDQ pairs into its integer kernels, which
      // move a few logits by up to ~0.5% of the largest here (0 with
      // --graph_optimization disabled); the rest agree to float rounding.
      EXPECT_LT(error, 1e-2 * scale);
      EXPECT_LT(mean_error, 1e-4 * scale);
    } else {
      EXPECT_LT(error, 1e-4 * scale);
    }
    if (c.form != GptOnnxForm::kFloat) {
      // Quantization moved the logits: the check is not of a float model.
      EXPECT_GT((want - float_logits).abs().mean().item<double>(),
                100 * mean_error);
    }
    EXPECT_EQ(OrtGreedy(file, prompt, 10), TorchGreedy(model, prompt, 10));
  }
}

TEST_F(MatMulNBitsOrtTest, OnnxRuntimeComputesTheFakeQuantizedLinear) {
  const std::string node = DISTILL_NODE;
  ASSERT_FALSE(node.empty()) << "node not found: run launch/install_deps.sh";
  const fs::path script =
      fs::path(DISTILL_SOURCE_DIR) / "tests/onnx/run_model.js";
  struct Case {
    int64_t k;
    GroupQuantSpec spec;
  };
  const std::vector<Case> cases = {{96, {4, 32, false}},
                                   {96, {4, 32, true}},
                                   {128, {4, 64, false}},
                                   {128, {4, 128, false}},
                                   {128, {4, 128, true}}};
  torch::manual_seed(7);
  for (const Case& c : cases) {
    const std::string label =
        "K " + std::to_string(c.k) + ", " + std::to_string(c.spec.bits) +
        " bits, group " + std::to_string(c.spec.group_size) +
        (c.spec.symmetric ? ", symmetric" : ", zero points");
    SCOPED_TRACE(label);
    const int64_t n = 24;
    const torch::Tensor w = torch::randn({n, c.k}) * 0.2;
    const torch::Tensor b = torch::randn({n});
    const torch::Tensor x = torch::randn({5, c.k});
    const GroupQuantParams params = GroupQuantParamsFromWeight(w, c.spec);
    const torch::Tensor expected =
        torch::matmul(
            x.to(torch::kFloat64),
            FakeQuantGroupwise(w, params, c.spec).to(torch::kFloat64).t()) +
        b.to(torch::kFloat64);

    auto model = MatMulNBitsLinearModel(w, b, params, c.spec);
    ASSERT_TRUE(model.ok()) << model.status();
    const fs::path model_file = dir_ / "linear.onnx";
    {
      std::ofstream out(model_file, std::ios::binary);
      ASSERT_TRUE(model->SerializeToOstream(&out));
    }
    WriteFloats(dir_ / "x.bin", x);
    const Outcome ort = RunShell(
        node + " " + script.string() + " --model " + model_file.string() +
            " --input " + (dir_ / "x.bin").string() + " --shape 5," +
            std::to_string(c.k) + " --output " + (dir_ / "y.bin").string(),
        dir_);
    ASSERT_EQ(ort.exit_code, 0) << ort.err;
    const nlohmann::json r = nlohmann::json::parse(ort.out);
    EXPECT_EQ(r["dims"], nlohmann::json::array({5, n}));
    const torch::Tensor y = ReadFloats(dir_ / "y.bin", {5, n});
    const double error =
        (y.to(torch::kFloat64) - expected).abs().max().item<double>();
    EXPECT_LT(error, 1e-4) << "ONNX Runtime " << r["ort_version"];
    // Quantization changed the product: the check is not of a float layer.
    const double from_float =
        (torch::matmul(x, w.t()) + b - expected.to(torch::kFloat32))
            .abs()
            .max()
            .item<double>();
    EXPECT_GT(from_float, 100 * error + 1e-3);
  }
}

TEST_F(MatMulNBitsOrtTest, GroupThatDoesNotDivideTheWidthIsRefused) {
  const torch::Tensor w = torch::randn({4, 96});
  const GroupQuantSpec spec{4, 64, true};
  GroupQuantParams params;  // never reached
  EXPECT_THAT(MatMulNBitsLinearModel(w, torch::Tensor(), params, spec),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "group size 64 does not divide the input width 96 of "
                       "layer 'linear'"));
}

// ONNX Runtime 1.20 refuses MatMulNBits with 8 bits when the session
// starts ("Only 4b quantization is supported"); the export says so first.
TEST_F(MatMulNBitsOrtTest, EightBitsAreRefusedBeforeExport) {
  const torch::Tensor w = torch::randn({4, 64});
  const GroupQuantSpec spec{8, 32, true};
  EXPECT_THAT(
      MatMulNBitsLinearModel(w, torch::Tensor(),
                             GroupQuantParamsFromWeight(w, spec), spec),
      StatusIs(absl::StatusCode::kInvalidArgument,
               "layer 'linear': ONNX Runtime's MatMulNBits (1.20) takes "
               "4-bit weights only, not 8; 8-bit weights export as QDQ"));
}

}  // namespace
}  // namespace distill::student::qat
