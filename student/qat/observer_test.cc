#include "student/qat/observer.h"

#include <gtest/gtest.h>

#include <limits>

namespace distill::student::qat {
namespace {

// By hand with c = 0.5: first batch sets (-1, 2); the second moves min to
// -1 + 0.5 (-3 + 1) = -2 and max to 2 + 0.5 (4 - 2) = 3; amax = 3.
TEST(ObserverTest, MovingAverageMinMax) {
  ObserverOptions options;
  options.averaging_constant = 0.5;
  RangeObserver obs(options);
  EXPECT_TRUE(obs.empty());
  EXPECT_EQ(obs.Amax(), 0);
  obs.Observe(torch::tensor({-1.0f, 0.5f, 2.0f}));
  EXPECT_DOUBLE_EQ(obs.min(), -1);
  EXPECT_DOUBLE_EQ(obs.max(), 2);
  EXPECT_DOUBLE_EQ(obs.Amax(), 2);
  obs.Observe(torch::tensor({-3.0f, 4.0f}));
  EXPECT_DOUBLE_EQ(obs.min(), -2);
  EXPECT_DOUBLE_EQ(obs.max(), 3);
  EXPECT_DOUBLE_EQ(obs.Amax(), 3);
  // Negative side larger: amax is |min|.
  obs.Observe(torch::tensor({-12.0f, 3.0f}));
  EXPECT_DOUBLE_EQ(obs.Amax(), 7);
}

TEST(ObserverTest, NonFiniteValuesAreIgnored) {
  RangeObserver obs;
  obs.Observe(torch::tensor({std::numeric_limits<float>::quiet_NaN(),
                             std::numeric_limits<float>::infinity()}));
  EXPECT_TRUE(obs.empty());
  obs.Observe(torch::tensor({std::numeric_limits<float>::quiet_NaN(), -0.5f}));
  EXPECT_DOUBLE_EQ(obs.Amax(), 0.5);
}

// |x| = 1/1000, 2/1000, ..., 10000/1000: the 99th percentile is 9.9 (to
// within one bin, 10/2048).
TEST(ObserverTest, PercentileOfUniformValues) {
  ObserverOptions options;
  options.method = ObserverMethod::kPercentile;
  options.percentile = 99;
  RangeObserver obs(options);
  torch::Tensor x = torch::arange(1, 10001, torch::kFloat32) / 1000;
  obs.Observe(x * torch::where(torch::arange(10000) % 2 == 0, 1, -1));
  EXPECT_NEAR(obs.Amax(), 9.9, 10.0 / 2048);
}

// One outlier of 1000 among values in [0, 1): min/max follows the outlier,
// the 99.9th percentile does not.
TEST(ObserverTest, PercentileIgnoresARareOutlier) {
  ObserverOptions options;
  options.method = ObserverMethod::kPercentile;
  options.percentile = 99.9;
  RangeObserver percentile(options);
  RangeObserver minmax;
  torch::Tensor x = torch::cat({torch::arange(0, 9999, torch::kFloat32) / 9999,
                                torch::tensor({1000.0f})});
  percentile.Observe(x);
  minmax.Observe(x);
  EXPECT_DOUBLE_EQ(minmax.Amax(), 1000);
  EXPECT_LT(percentile.Amax(), 1.0 + 1000.0 / 2048);
  EXPECT_GT(percentile.Amax(), 0.99 - 1000.0 / 2048);
}

// Uniform on [0, 1] then uniform on [0, 4], 4000 values each: the median m
// solves 0.5 m + 0.5 m / 4 = 0.5, m = 0.8. The second batch grows the
// histogram's range, which re-bins the first.
TEST(ObserverTest, PercentileSurvivesHistogramGrowth) {
  ObserverOptions options;
  options.method = ObserverMethod::kPercentile;
  options.percentile = 50;
  RangeObserver obs(options);
  obs.Observe(torch::linspace(0, 1, 4000));
  obs.Observe(torch::linspace(0, 4, 4000));
  EXPECT_NEAR(obs.Amax(), 0.8, 0.01);
}

}  // namespace
}  // namespace distill::student::qat
