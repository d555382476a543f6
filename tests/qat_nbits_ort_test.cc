// Group-wise quantized Linear layers exported as ONNX Runtime's MatMulNBits
// (student/qat/onnx_nbits.h) and run in ONNX Runtime (npm's
// onnxruntime-node, tests/onnx/run_model.js): the runtime's product must be
// LibTorch's x · FakeQuantGroupwise(W)ᵀ + b, for 4 bits (all that ONNX
// Runtime 1.20's MatMulNBits runs), symmetric and with zero points, an odd
// number of groups a row (the zero points' padding) and one group a row. A
// wrong byte order, nibble order or zero-point layout puts whole groups off by
// a scale or more.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "common/testing/process.h"
#include "common/testing/scratch_dir.h"
#include "common/testing/status_matchers.h"
#include "nlohmann/json.hpp"
#include "student/qat/group_quant.h"
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
