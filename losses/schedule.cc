#include "losses/schedule.h"

#include <algorithm>
#include <cmath>

namespace distill::losses {

double ValueSchedule::At(int64_t step, int64_t total_steps) const {
  const double x =
      total_steps <= 0
          ? 0.0
          : std::clamp(static_cast<double>(step) / total_steps, 0.0, 1.0);
  switch (type) {
    case Type::kConstant:
      return start;
    case Type::kLinear:
      return start + (end - start) * x;
    case Type::kCosine:
      return end + (start - end) * 0.5 * (1.0 + std::cos(M_PI * x));
  }
  return start;
}

}  // namespace distill::losses
