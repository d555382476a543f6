#include "trainer/internal/config_checks.h"

#include <cmath>
#include <cstdint>
#include <utility>

#include "common/temperature.h"

namespace distill::trainer {

absl::Status Bad(const std::string& path, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat(path, " ", what));
}

namespace {

// A bound as a reader writes it: 31536000, not 3.1536e+07.
std::string Bound(double value) {
  if (std::isfinite(value) && value == std::floor(value) &&
      std::fabs(value) < 1e15) {
    return absl::StrCat(static_cast<int64_t>(value));
  }
  return absl::StrCat(value);
}

}  // namespace

Range::Range(double low, double high, bool low_open, bool high_open,
             std::string text)
    : low_(low),
      high_(high),
      low_open_(low_open),
      high_open_(high_open),
      text_(std::move(text)) {}

Range Range::Above(double low) {
  return Range(low, INFINITY, true, false, absl::StrCat("> ", Bound(low)));
}

Range Range::AtLeast(double low) {
  return Range(low, INFINITY, false, false, absl::StrCat(">= ", Bound(low)));
}

Range Range::Closed(double low, double high) {
  return Range(low, high, false, false,
               absl::StrCat("in [", Bound(low), ", ", Bound(high), "]"));
}

Range Range::ClosedOpen(double low, double high) {
  return Range(low, high, false, true,
               absl::StrCat("in [", Bound(low), ", ", Bound(high), ")"));
}

Range Range::OpenClosed(double low, double high) {
  return Range(low, high, true, false,
               absl::StrCat("in (", Bound(low), ", ", Bound(high), "]"));
}

Range Range::Finite() const {
  Range range = *this;
  range.finite_ = true;
  return range;
}

Range Range::Described(std::string text) const {
  Range range = *this;
  range.text_ = std::move(text);
  return range;
}

Range Range::Noted(const std::string& note) const {
  return Described(absl::StrCat(text_, " ", note));
}

bool Range::Contains(double value) const {
  if (std::isnan(value) || (finite_ && !std::isfinite(value))) return false;
  const bool above_low = low_open_ ? value > low_ : value >= low_;
  const bool below_high = high_open_ ? value < high_ : value <= high_;
  return above_low && below_high;
}

Range SecondsRange() { return Range::OpenClosed(0, 31536000); }

Range TemperatureRange() {
  return Range::AtLeast(kMinTemperature)
      .Finite()
      .Noted("(smaller ones overflow z / T)");
}

}  // namespace distill::trainer
