// The smallest softmax temperature the framework accepts, shared by the job
// config, the teacher service and the losses so all three refuse the same
// values. Below it nothing is gained: at T = 1e-3 a logit gap of 0.1 already
// gives a probability ratio of e^-100, one-hot in fp32. Far below it, z / T
// leaves the float range (T = 1e-40 makes every probability NaN).
#ifndef DISTILL_COMMON_TEMPERATURE_H_
#define DISTILL_COMMON_TEMPERATURE_H_

namespace distill {

inline constexpr double kMinTemperature = 1e-3;

}  // namespace distill

#endif  // DISTILL_COMMON_TEMPERATURE_H_
