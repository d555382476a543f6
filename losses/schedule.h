// Values that change with training progress: the temperature schedule and
// per-term weight schedules. Pure functions of (step, total_steps), so a
// resumed run continues them exactly with no state of their own. A plain
// value type; thread-safe.
#ifndef DISTILL_LOSSES_SCHEDULE_H_
#define DISTILL_LOSSES_SCHEDULE_H_

#include <cstdint>

namespace distill::losses {

struct ValueSchedule {
  enum class Type { kConstant, kLinear, kCosine };

  Type type = Type::kConstant;
  double start = 0.0;
  // Unused by kConstant.
  double end = 0.0;

  // The value at 0-based `step` of `total_steps`, with progress
  // x = step / total_steps clamped to [0, 1] (x = 0 when total_steps <= 0):
  //   kConstant  start
  //   kLinear    start + (end - start) x
  //   kCosine    end + (start - end) (1 + cos(pi x)) / 2
  double At(int64_t step, int64_t total_steps) const;
};

}  // namespace distill::losses

#endif  // DISTILL_LOSSES_SCHEDULE_H_
