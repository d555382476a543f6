#include "student/qat/report.h"

#include <algorithm>

namespace distill::student::qat {
namespace {

nlohmann::json AccuracyJson(const AccuracyEntry& e) {
  return {{"accuracy", e.accuracy}, {"per_class_accuracy", e.per_class}};
}

}  // namespace

nlohmann::json PerClassChange(const AccuracyEntry& before,
                              const AccuracyEntry& after) {
  struct Row {
    size_t cls;
    double before, after, change;
  };
  std::vector<Row> rows;
  const size_t n = std::min(before.per_class.size(), after.per_class.size());
  for (size_t c = 0; c < n; ++c) {
    rows.push_back({c, before.per_class[c], after.per_class[c],
                    100 * (after.per_class[c] - before.per_class[c])});
  }
  std::stable_sort(rows.begin(), rows.end(), [](const Row& a, const Row& b) {
    return a.change < b.change;
  });
  nlohmann::json out = nlohmann::json::array();
  for (const Row& r : rows) {
    out.push_back({{"class", r.cls},
                   {"before", r.before},
                   {"after", r.after},
                   {"change_points", r.change}});
  }
  return out;
}

nlohmann::json BuildQuantizationReport(const QuantizationReportInputs& in) {
  nlohmann::json accuracy = {{"fp32", AccuracyJson(in.fp32)},
                             {"ptq_int8", AccuracyJson(in.ptq_int8)}};
  nlohmann::json change = {
      {"ptq_int8", 100 * (in.ptq_int8.accuracy - in.fp32.accuracy)}};
  nlohmann::json per_class = {
      {"ptq_int8", PerClassChange(in.fp32, in.ptq_int8)}};
  if (in.qat_int8) {
    accuracy["qat_int8"] = AccuracyJson(*in.qat_int8);
    change["qat_int8"] = 100 * (in.qat_int8->accuracy - in.fp32.accuracy);
    per_class["qat_int8"] = PerClassChange(in.fp32, *in.qat_int8);
  }
  const double ratio =
      in.fp32_onnx_bytes > 0
          ? static_cast<double>(in.int8_onnx_bytes) / in.fp32_onnx_bytes
          : 0.0;
  return {
      {"model", in.model},
      {"params", in.params},
      {"weight_bytes",
       {{"fp32", 4 * in.params}, {"fp16", 2 * in.params}, {"int8", in.params}}},
      {"onnx_file_bytes",
       {{"fp32", in.fp32_onnx_bytes},
        {"int8", in.int8_onnx_bytes},
        {"int8_over_fp32", ratio}}},
      {"accuracy", accuracy},
      {"change_vs_fp32_points", change},
      {"per_class_change_vs_fp32", per_class},
      {"quantized_layers", in.quantized_layers},
      {"skipped_layers", in.skipped_layers},
      {"settings", in.settings},
      {"files", in.files},
  };
}

}  // namespace distill::student::qat
