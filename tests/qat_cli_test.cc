// The QAT stage as a user runs it: `distill` trains a small student and
// quantizes it, ONNX Runtime (the npm package onnxruntime-node, run by
// tests/onnx/ort_check.js) runs the exported INT8 and FP32 models on the
// whole Fashion-MNIST test set, and the results must agree with LibTorch's.
// Also QUANTIZE mode on a checkpoint, teacher-guided or not, PTQ only, and
// every bad input refused with one clear line before any work.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "common/testing/process.h"
#include "common/testing/scratch_dir.h"

namespace {

namespace fs = std::filesystem;

constexpr char kDataset[] = "/usr/share/datasets/fashion-mnist";

using ::distill::testing::BinDir;
using ::distill::testing::Outcome;
using ::distill::testing::ReadFile;
using ::distill::testing::ScratchDirTest;

class QatTest : public ScratchDirTest {
 protected:
  Outcome Shell(const std::string& command) {
    return ::distill::testing::RunShell(command, dir_);
  }

  Outcome Distill(const fs::path& config, const fs::path& run) {
    return Shell(BinDir() + "/distill --quiet --config " + config.string() +
                 " --run_dir " + run.string());
  }

  // A cnn_student trained one short epoch on hard labels: its model.pt.
  fs::path TrainStudent(int64_t train_limit) {
    fs::path config = Write("train.pbtxt", R"pb(
      mode: TRAIN
      student { arch: "cnn_student" }
      data { train_limit: )pb" + std::to_string(train_limit) +
                                               R"pb( test_limit: 500 }
      optimizer { lr: 0.05 }
      batch_size: 64 epochs: 1 threads: 2
    )pb");
    fs::path run = dir_ / "student";
    Outcome o = Distill(config, run);
    EXPECT_EQ(o.exit_code, 0) << o.err;
    return run / "model.pt";
  }

  nlohmann::json Report(const fs::path& run) {
    return nlohmann::json::parse(
        ReadFile(run / "qat" / "quantization_report.json"));
  }
};

// The acceptance check of the export: the INT8 QDQ model in ONNX Runtime
// agrees with the C++ fake-quant evaluation on the full test set (accuracy
// within 0.3 points, argmax on >= 99.5% of the images), and the FP32 export
// with LibTorch's FP32 logits.
TEST_F(QatTest, Int8ExportAgreesWithOnnxRuntimeOnTheFullTestSet) {
  const std::string node = DISTILL_NODE;
  const fs::path script =
      fs::path(DISTILL_SOURCE_DIR) / "tests/onnx/ort_check.js";
  ASSERT_FALSE(node.empty()) << "node not found: run launch/install_deps.sh";
  ASSERT_TRUE(fs::exists(fs::path(DISTILL_SOURCE_DIR) /
                         "tests/onnx/node_modules/onnxruntime-node"))
      << "onnxruntime-node is not installed: run launch/install_deps.sh";

  fs::path config = Write("job.pbtxt", R"pb(
    mode: TRAIN
    student { arch: "cnn_student" }
    data { train_limit: 4096 }
    optimizer { lr: 0.05 }
    batch_size: 64 epochs: 1 threads: 2
    qat { calibration_batches: 8 epochs: 1 lr: 0.005 }
  )pb");
  fs::path run = dir_ / "run";
  Outcome o = Distill(config, run);
  ASSERT_EQ(o.exit_code, 0) << o.err;
  nlohmann::json report = Report(run);
  ASSERT_EQ(report["model"], "cnn_student");
  ASSERT_TRUE(report["accuracy"].contains("qat_int8"));

  Outcome ort = Shell(node + " " + script.string() + " --qat_dir " +
                      (run / "qat").string() + " --data " + kDataset);
  ASSERT_EQ(ort.exit_code, 0) << ort.err;
  nlohmann::json r = nlohmann::json::parse(ort.out);
  std::printf(
      "ONNX Runtime %s on %d images: INT8 %.4f (C++ fake quant %.4f, "
      "argmax agreement %.4f); FP32 %.4f, max |logit diff| vs "
      "LibTorch %.3g\n",
      r["ort_version"].get<std::string>().c_str(), r["samples"].get<int>(),
      r["int8_ort_accuracy"].get<double>(),
      r["int8_cpp_accuracy"].get<double>(),
      r["int8_argmax_agreement"].get<double>(),
      r["fp32_ort_accuracy"].get<double>(),
      r["fp32_max_abs_logit_diff"].get<double>());
  EXPECT_EQ(r["samples"], 10000);
  EXPECT_LE(std::abs(r["int8_ort_accuracy"].get<double>() -
                     r["int8_cpp_accuracy"].get<double>()),
            0.003);
  EXPECT_GE(r["int8_argmax_agreement"].get<double>(), 0.995);
  EXPECT_LT(r["fp32_max_abs_logit_diff"].get<double>(), 1e-3);
  EXPECT_GE(r["fp32_argmax_agreement"].get<double>(), 0.999);
  // The predictions file is the evaluation the report states.
  EXPECT_NEAR(r["int8_cpp_accuracy"].get<double>(),
              report["accuracy"]["qat_int8"]["accuracy"].get<double>(), 1e-9);
  EXPECT_NEAR(r["fp32_ort_accuracy"].get<double>(),
              report["accuracy"]["fp32"]["accuracy"].get<double>(), 0.001);
  // A trained student, so the comparison means something.
  EXPECT_GT(r["int8_ort_accuracy"].get<double>(), 0.7);

  // One byte per weight instead of four, plus float biases and scales.
  const double ratio =
      report["onnx_file_bytes"]["int8_over_fp32"].get<double>();
  EXPECT_LT(ratio, 0.3);
  EXPECT_GT(ratio, 0.25);
  EXPECT_EQ(
      report["onnx_file_bytes"]["int8"].get<int64_t>(),
      static_cast<int64_t>(fs::file_size(run / "qat" / "student_int8.onnx")));
  const int64_t params = report["params"].get<int64_t>();
  EXPECT_EQ(report["weight_bytes"]["fp16"].get<int64_t>(), 2 * params);
  EXPECT_EQ(report["per_class_change_vs_fp32"]["qat_int8"].size(), 10u);
  nlohmann::json summary =
      nlohmann::json::parse(ReadFile(run / "summary.json"));
  EXPECT_EQ(summary["qat"]["report"], "qat/quantization_report.json");
}

// QUANTIZE mode on a checkpoint, guided by a teacher (here the student's own
// weights, which makes a cheap but real teacher): the fine-tuning loss has
// the teacher's term; unguided it has hard labels alone; PTQ only skips
// fine-tuning.
TEST_F(QatTest, QuantizeModeTeacherGuidedUnguidedAndPtqOnly) {
  const fs::path weights = TrainStudent(1024);
  const std::string common = R"pb(
    mode: QUANTIZE
    student { arch: "cnn_student" weights: ")pb" +
                             weights.string() + R"pb(" }
    data { train_limit: 512 test_limit: 500 }
    batch_size: 64 threads: 2
  )pb";
  const std::string teacher =
      "teacher { model { arch: \"cnn_student\" weights: \"" + weights.string() +
      "\" } }\n";

  Outcome guided =
      Distill(Write("guided.pbtxt",
                    common + teacher + "qat { calibration_batches: 2 }\n"),
              dir_ / "guided");
  ASSERT_EQ(guided.exit_code, 0) << guided.err;
  nlohmann::json g = Report(dir_ / "guided");
  EXPECT_EQ(g["settings"]["teacher_guided"], true);
  EXPECT_TRUE(g["settings"]["last_epoch_loss_terms"].contains("kd_kl"));
  EXPECT_TRUE(g["settings"]["last_epoch_loss_terms"].contains("hard_ce"));
  EXPECT_NEAR(g["settings"]["lr"].get<double>(), 0.01, 1e-12);  // 0.1 / 10

  Outcome unguided = Distill(
      Write("unguided.pbtxt",
            common + teacher +
                "qat { calibration_batches: 2 teacher_guided: false }\n"),
      dir_ / "unguided");
  ASSERT_EQ(unguided.exit_code, 0) << unguided.err;
  nlohmann::json u = Report(dir_ / "unguided");
  EXPECT_EQ(u["settings"]["teacher_guided"], false);
  EXPECT_FALSE(u["settings"]["last_epoch_loss_terms"].contains("kd_kl"));
  EXPECT_TRUE(u["settings"]["last_epoch_loss_terms"].contains("hard_ce"));

  Outcome ptq =
      Distill(Write("ptq.pbtxt",
                    common + "qat { calibration_batches: 2 epochs: 0 "
                             "observer: PERCENTILE skip_layers: \"fc2\" }\n"),
              dir_ / "ptq");
  ASSERT_EQ(ptq.exit_code, 0) << ptq.err;
  nlohmann::json p = Report(dir_ / "ptq");
  EXPECT_FALSE(p["accuracy"].contains("qat_int8"));
  EXPECT_EQ(p["settings"]["teacher_guided"], false);
  EXPECT_EQ(p["skipped_layers"], nlohmann::json({"fc2"}));
  EXPECT_TRUE(fs::exists(dir_ / "ptq" / "qat" / "student_int8.onnx"));
  EXPECT_FALSE(fs::exists(dir_ / "ptq" / "qat" / "student_qat_weights.pt"));
}

// Bad input: one clear line, exit 1, and nothing written under qat/.
class QatRefusalTest : public QatTest {
 protected:
  void ExpectRefused(const std::string& config_text, const std::string& error) {
    fs::path config = Write("bad.pbtxt", config_text);
    fs::path run = dir_ / "run";
    Outcome o = Distill(config, run);
    EXPECT_EQ(o.exit_code, 1) << o.err;
    EXPECT_EQ(o.err, "distill: error: " + error + "\n");
    EXPECT_FALSE(fs::exists(run / "qat"));
    EXPECT_FALSE(fs::exists(run / "model.pt"));
  }
};

TEST_F(QatRefusalTest, UnknownSkipLayerListsTheModelsLayers) {
  ExpectRefused(
      R"pb(
    mode: TRAIN
    student { arch: "cnn_student" }
    data { train_limit: 64 test_limit: 64 }
    qat { skip_layers: "fc1" skip_layers: "fc9" }
  )pb",
      "qat.skip_layers[1] 'fc9' is not a Conv2d or Linear layer of "
      "cnn_student; its layers: stage1.conv0, stage2.conv0, fc1, fc2");
}

TEST_F(QatRefusalTest, OutOfRangeField) {
  ExpectRefused(
      "mode: TRAIN\nstudent { arch: \"mlp\" }\nqat {\n  epochs: 2\n"
      "  freeze_bn_after_epochs: 3\n}\n",
      (dir_ / "bad.pbtxt").string() +
          ":5: qat.freeze_bn_after_epochs must be in [0, qat.epochs] "
          "= [0, 2] (got 3)");
}

TEST_F(QatRefusalTest, TorchScriptStudent) {
  ExpectRefused("mode: TRAIN\nstudent { torchscript: \"m.pt\" }\nqat {}\n",
                (dir_ / "bad.pbtxt").string() +
                    ":3: qat supports zoo students only (student.arch: "
                    "cnn_student, cnn_teacher, mlp or gpt): a TorchScript "
                    "student's layers cannot be rewritten for quantization "
                    "here");
}

TEST_F(QatRefusalTest, MissingStudentCheckpoint) {
  ExpectRefused(R"pb(
    mode: QUANTIZE
    student { arch: "cnn_student" weights: "/nonexistent/model.pt" }
    data { train_limit: 64 test_limit: 64 }
    qat {}
  )pb",
                "loading student.weights: weights file not found: "
                "/nonexistent/model.pt");
}

TEST_F(QatRefusalTest, QuantizeNeedsAStudentCheckpointAndQat) {
  ExpectRefused("mode: QUANTIZE\nstudent { arch: \"mlp\" }\nqat {}\n",
                (dir_ / "bad.pbtxt").string() +
                    ":2: student.weights is required in mode QUANTIZE: the "
                    "trained student to quantize");
  ExpectRefused(
      "mode: QUANTIZE\nstudent { arch: \"mlp\" weights: \"w.pt\" }\n",
      (dir_ / "bad.pbtxt").string() + ": qat is required in mode QUANTIZE");
}

TEST_F(QatRefusalTest, TeacherGuidanceWithoutATeacher) {
  ExpectRefused(
      "mode: TRAIN\nstudent { arch: \"mlp\" }\n"
      "qat {\n  teacher_guided: true\n}\n",
      (dir_ / "bad.pbtxt").string() +
          ":4: qat.teacher_guided needs a teacher: mode DISTILL, or "
          "QUANTIZE with a `teacher`");
}

}  // namespace
