#include "trainer/internal/lr_schedule.h"

#include <algorithm>
#include <cmath>

namespace distill::trainer {

double LearningRate(const ::distill::v1::ScheduleConfig& schedule,
                    double base_lr, int64_t step, int64_t steps_per_epoch,
                    int64_t total_steps) {
  const int64_t warmup = schedule.warmup_steps();
  if (step < warmup) {
    return base_lr * static_cast<double>(step + 1) /
           static_cast<double>(warmup);
  }
  switch (schedule.type()) {
    case ::distill::v1::ScheduleConfig::STEP: {
      const int64_t epoch = step / std::max<int64_t>(steps_per_epoch, 1);
      return base_lr *
             std::pow(schedule.gamma(),
                      static_cast<double>(epoch / schedule.step_epochs()));
    }
    case ::distill::v1::ScheduleConfig::COSINE: {
      const double span =
          static_cast<double>(std::max<int64_t>(total_steps - warmup, 1));
      const double progress =
          std::clamp(static_cast<double>(step - warmup) / span, 0.0, 1.0);
      return schedule.min_lr() + 0.5 * (base_lr - schedule.min_lr()) *
                                     (1.0 + std::cos(M_PI * progress));
    }
    default:
      return base_lr;
  }
}

}  // namespace distill::trainer
