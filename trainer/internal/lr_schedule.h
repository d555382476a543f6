// Learning-rate schedules as pure functions of the step, so the schedule's
// whole state is the global step a checkpoint already holds.
#ifndef DISTILL_TRAINER_INTERNAL_LR_SCHEDULE_H_
#define DISTILL_TRAINER_INTERNAL_LR_SCHEDULE_H_

#include <cstdint>

#include "proto/job.pb.h"

namespace distill::trainer {

// The learning rate for 0-based `step` of a run of `total_steps` steps with
// `steps_per_epoch` steps per epoch, peaking at `base_lr`.
double LearningRate(const ::distill::v1::ScheduleConfig& schedule,
                    double base_lr, int64_t step, int64_t steps_per_epoch,
                    int64_t total_steps);

}  // namespace distill::trainer

#endif  // DISTILL_TRAINER_INTERNAL_LR_SCHEDULE_H_
