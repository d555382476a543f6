#include "trainer/internal/config_checks.h"

#include <cmath>
#include <utility>

namespace distill::trainer {

absl::Status Bad(const std::string& path, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat(path, " ", what));
}

Range::Range(double low, double high, bool low_open, bool high_open,
             std::string text)
    : low_(low),
      high_(high),
      low_open_(low_open),
      high_open_(high_open),
      text_(std::move(text)) {}

Range Range::Above(double low) {
  return Range(low, INFINITY, true, false, absl::StrCat("> ", low));
}

Range Range::AtLeast(double low) {
  return Range(low, INFINITY, false, false, absl::StrCat(">= ", low));
}

Range Range::Closed(double low, double high) {
  return Range(low, high, false, false,
               absl::StrCat("in [", low, ", ", high, "]"));
}

Range Range::ClosedOpen(double low, double high) {
  return Range(low, high, false, true,
               absl::StrCat("in [", low, ", ", high, ")"));
}

Range Range::OpenClosed(double low, double high) {
  return Range(low, high, true, false,
               absl::StrCat("in (", low, ", ", high, "]"));
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

}  // namespace distill::trainer
