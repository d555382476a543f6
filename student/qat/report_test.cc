#include "student/qat/report.h"

#include <gtest/gtest.h>

namespace distill::student::qat {
namespace {

TEST(ReportTest, PerClassChangeIsWorstFirst) {
  AccuracyEntry before{0.9, {0.90, 0.80, 0.70}};
  AccuracyEntry after{0.88, {0.91, 0.75, 0.69}};
  nlohmann::json rows = PerClassChange(before, after);
  ASSERT_EQ(rows.size(), 3u);
  EXPECT_EQ(rows[0]["class"], 1);
  EXPECT_NEAR(rows[0]["change_points"].get<double>(), -5.0, 1e-9);
  EXPECT_EQ(rows[1]["class"], 2);
  EXPECT_NEAR(rows[1]["change_points"].get<double>(), -1.0, 1e-9);
  EXPECT_EQ(rows[2]["class"], 0);
  EXPECT_NEAR(rows[2]["change_points"].get<double>(), 1.0, 1e-9);
}

TEST(ReportTest, WeightBytesSizesAndChanges) {
  QuantizationReportInputs in;
  in.model = "cnn_student";
  in.params = 1000;
  in.fp32_onnx_bytes = 4400;
  in.int8_onnx_bytes = 1320;
  in.fp32 = {0.90, {0.9}};
  in.ptq_int8 = {0.88, {0.88}};
  nlohmann::json r = BuildQuantizationReport(in);
  EXPECT_EQ(r["weight_bytes"]["fp32"], 4000);
  EXPECT_EQ(r["weight_bytes"]["fp16"], 2000);
  EXPECT_EQ(r["weight_bytes"]["int8"], 1000);
  EXPECT_NEAR(r["onnx_file_bytes"]["int8_over_fp32"].get<double>(), 0.3, 1e-12);
  EXPECT_NEAR(r["change_vs_fp32_points"]["ptq_int8"].get<double>(), -2.0, 1e-9);
  EXPECT_FALSE(r["accuracy"].contains("qat_int8"));
  in.qat_int8 = AccuracyEntry{0.895, {0.895}};
  r = BuildQuantizationReport(in);
  EXPECT_NEAR(r["change_vs_fp32_points"]["qat_int8"].get<double>(), -0.5, 1e-9);
  EXPECT_EQ(r["per_class_change_vs_fp32"]["qat_int8"].size(), 1u);
}

}  // namespace
}  // namespace distill::student::qat
