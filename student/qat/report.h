// quantization_report.json: what the QAT stage measured, side by side —
// FP32, PTQ INT8 and QAT INT8 accuracy overall and per class, the per-class
// change against FP32 worst first (an average can hide the one class that
// got worse), parameter count, weight bytes at FP32/FP16/INT8 and the
// exported ONNX file sizes. Stateless.
#ifndef DISTILL_STUDENT_QAT_REPORT_H_
#define DISTILL_STUDENT_QAT_REPORT_H_

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

namespace distill::student::qat {

struct AccuracyEntry {
  double accuracy = 0;
  std::vector<double> per_class;  // accuracy of each class, in [0, 1]
};

struct QuantizationReportInputs {
  std::string model;
  int64_t params = 0;
  int64_t fp32_onnx_bytes = 0;
  int64_t int8_onnx_bytes = 0;
  AccuracyEntry fp32;
  AccuracyEntry ptq_int8;
  // Absent for a PTQ-only run (qat.epochs == 0).
  std::optional<AccuracyEntry> qat_int8;
  std::vector<std::string> quantized_layers;
  std::vector<std::string> skipped_layers;
  // The stage's settings and files, copied into the report as given.
  nlohmann::json settings;
  nlohmann::json files;
};

// Per-class change of `after` against `before` in accuracy points, as
// [{"class", "before", "after", "change_points"}], worst (most negative)
// change first; ties by class id.
nlohmann::json PerClassChange(const AccuracyEntry& before,
                              const AccuracyEntry& after);

nlohmann::json BuildQuantizationReport(const QuantizationReportInputs& in);

}  // namespace distill::student::qat

#endif  // DISTILL_STUDENT_QAT_REPORT_H_
