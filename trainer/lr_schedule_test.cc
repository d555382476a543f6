#include "trainer/internal/lr_schedule.h"

#include <gtest/gtest.h>

#include <cmath>

namespace distill::trainer {
namespace {

using ::distill::v1::ScheduleConfig;

TEST(LrScheduleTest, ConstantWithWarmupRampsLinearly) {
  ScheduleConfig s;
  s.set_type(ScheduleConfig::CONSTANT);
  s.set_warmup_steps(4);
  EXPECT_DOUBLE_EQ(LearningRate(s, 0.2, 0, 10, 100), 0.05);
  EXPECT_DOUBLE_EQ(LearningRate(s, 0.2, 3, 10, 100), 0.2);
  EXPECT_DOUBLE_EQ(LearningRate(s, 0.2, 50, 10, 100), 0.2);
}

TEST(LrScheduleTest, StepDecaysByGammaEveryStepEpochs) {
  ScheduleConfig s;
  s.set_type(ScheduleConfig::STEP);
  s.set_step_epochs(2);
  s.set_gamma(0.5);
  EXPECT_DOUBLE_EQ(LearningRate(s, 0.8, 19, 10, 100), 0.8);  // epoch 1
  EXPECT_DOUBLE_EQ(LearningRate(s, 0.8, 20, 10, 100), 0.4);  // epoch 2
  EXPECT_DOUBLE_EQ(LearningRate(s, 0.8, 45, 10, 100), 0.2);  // epoch 4
}

TEST(LrScheduleTest, CosineGoesFromPeakToMinimumAfterWarmup) {
  ScheduleConfig s;
  s.set_type(ScheduleConfig::COSINE);
  s.set_warmup_steps(10);
  s.set_min_lr(0.01);
  EXPECT_DOUBLE_EQ(LearningRate(s, 1.0, 10, 10, 110), 1.0);
  // Half-way through the decay: the mean of peak and minimum.
  EXPECT_NEAR(LearningRate(s, 1.0, 60, 10, 110), 0.505, 1e-12);
  EXPECT_NEAR(LearningRate(s, 1.0, 110, 10, 110), 0.01, 1e-12);
}

}  // namespace
}  // namespace distill::trainer
