#include "losses/schedule.h"

#include <gtest/gtest.h>

#include <cmath>

namespace distill::losses {
namespace {

TEST(ValueScheduleTest, ConstantIgnoresProgressAndEnd) {
  const ValueSchedule s{ValueSchedule::Type::kConstant, 4.0, 9.0};
  EXPECT_EQ(s.At(0, 100), 4.0);
  EXPECT_EQ(s.At(100, 100), 4.0);
}

TEST(ValueScheduleTest, LinearAtHandPoints) {
  const ValueSchedule s{ValueSchedule::Type::kLinear, 4.0, 1.0};
  EXPECT_DOUBLE_EQ(s.At(0, 10), 4.0);
  EXPECT_DOUBLE_EQ(s.At(3, 10), 4.0 - 3.0 * 0.3);  // 3.1
  EXPECT_DOUBLE_EQ(s.At(5, 10), 2.5);
  EXPECT_DOUBLE_EQ(s.At(10, 10), 1.0);
  // Past the end and before the start it holds the end values.
  EXPECT_DOUBLE_EQ(s.At(15, 10), 1.0);
  EXPECT_DOUBLE_EQ(s.At(-1, 10), 4.0);
}

TEST(ValueScheduleTest, CosineAtHandPoints) {
  const ValueSchedule s{ValueSchedule::Type::kCosine, 1.0, 0.0};
  EXPECT_DOUBLE_EQ(s.At(0, 8), 1.0);
  // x = 1/4: (1 + cos(pi / 4)) / 2 = (1 + sqrt(2) / 2) / 2.
  EXPECT_NEAR(s.At(2, 8), (1.0 + std::sqrt(2.0) / 2.0) / 2.0, 1e-15);
  EXPECT_NEAR(s.At(4, 8), 0.5, 1e-15);
  EXPECT_NEAR(s.At(6, 8), (1.0 - std::sqrt(2.0) / 2.0) / 2.0, 1e-15);
  EXPECT_NEAR(s.At(8, 8), 0.0, 1e-15);
  // Rising: 2 -> 6 at x = 1/3 is 6 + (2 - 6) (1 + 0.5) / 2 = 3.
  const ValueSchedule up{ValueSchedule::Type::kCosine, 2.0, 6.0};
  EXPECT_NEAR(up.At(1, 3), 3.0, 1e-12);
}

TEST(ValueScheduleTest, UnknownTotalStepsMeansStart) {
  const ValueSchedule s{ValueSchedule::Type::kLinear, 2.0, 8.0};
  EXPECT_EQ(s.At(7, 0), 2.0);
}

}  // namespace
}  // namespace distill::losses
