// How the job config's validation words its errors: "<field path> <what>",
// and for numbers one Range that both decides and describes the allowed
// values, so the check and its message cannot disagree: "optimizer.lr must
// be > 0 (got -0.01)". Stateless.
#ifndef DISTILL_TRAINER_INTERNAL_CONFIG_CHECKS_H_
#define DISTILL_TRAINER_INTERNAL_CONFIG_CHECKS_H_

#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "proto/job.pb.h"

namespace distill::trainer {

// A validation failure at a field path such as "loss[1].weight".
absl::Status Bad(const std::string& path, const std::string& what);

// An interval of allowed values. NaN is outside every range.
class Range {
 public:
  static Range Above(double low);                    // > low
  static Range AtLeast(double low);                  // >= low
  static Range Closed(double low, double high);      // in [low, high]
  static Range ClosedOpen(double low, double high);  // in [low, high)
  static Range OpenClosed(double low, double high);  // in (low, high]

  // The same range, refusing infinities as well.
  Range Finite() const;
  // The same range, described as `text` instead of by its bounds
  // ("in [0, optimizer.lr]").
  Range Described(std::string text) const;
  // The same range with `note` after its description (">= 0 (0: PTQ only)").
  Range Noted(const std::string& note) const;

  bool Contains(double value) const;
  // ">= 1", "in [0, 1)"; what follows "must be " in a message.
  const std::string& text() const { return text_; }

 private:
  Range(double low, double high, bool low_open, bool high_open,
        std::string text);

  double low_, high_;
  bool low_open_, high_open_;
  bool finite_ = false;
  std::string text_;
};

// Durations in seconds: > 0 and at most a year (31,536,000 s), so every
// conversion to integer milliseconds or nanoseconds fits.
Range SecondsRange();

// Softmax temperatures: >= kMinTemperature (common/temperature.h), finite.
Range TemperatureRange();

// More epochs than any run takes; the bound keeps step counts far from int64
// overflow.
inline constexpr int kMaxEpochs = 1000000;

// OK when `value` lies in `range`; else InvalidArgument
// "<path> must be <range> (got <value>)".
template <typename T>
absl::Status CheckRange(const std::string& path, T value, const Range& range) {
  if (range.Contains(static_cast<double>(value))) return absl::OkStatus();
  return Bad(path,
             absl::StrCat("must be ", range.text(), " (got ", value, ")"));
}

// A model source ("student", "teacher.model"): a zoo arch or a TorchScript
// file, with weights when `weights_required`. In config_validate.cc.
absl::Status ValidateModel(const v1::ModelConfig& model,
                           const std::string& path, bool weights_required);

// The teacher section of a config with its defaults applied. In
// config_validate_teacher.cc.
absl::Status ValidateTeacher(const v1::JobConfig& c);

}  // namespace distill::trainer

#endif  // DISTILL_TRAINER_INTERNAL_CONFIG_CHECKS_H_
