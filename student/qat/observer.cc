#include "student/qat/observer.h"

#include <algorithm>
#include <cmath>

namespace distill::student::qat {

RangeObserver::RangeObserver(const ObserverOptions& options)
    : options_(options) {
  if (options_.method == ObserverMethod::kPercentile) {
    hist_.assign(std::max<int64_t>(options_.bins, 16), 0.0);
  }
}

void RangeObserver::Observe(const torch::Tensor& x) {
  torch::NoGradGuard no_grad;
  torch::Tensor v = x.detach().to(torch::kFloat32).flatten();
  v = v.index({torch::isfinite(v)});
  if (v.numel() == 0) return;
  const double batch_min = v.min().item<double>();
  const double batch_max = v.max().item<double>();
  if (!seen_) {
    min_ = batch_min;
    max_ = batch_max;
  } else {
    const double c = options_.averaging_constant;
    min_ += c * (batch_min - min_);
    max_ += c * (batch_max - max_);
  }
  seen_ = true;
  if (options_.method == ObserverMethod::kPercentile) {
    AddToHistogram(v.abs(), std::max(std::abs(batch_min), std::abs(batch_max)));
  }
}

void RangeObserver::AddToHistogram(const torch::Tensor& magnitudes,
                                   double batch_max) {
  const int64_t bins = static_cast<int64_t>(hist_.size());
  if (batch_max > hist_max_) {
    // Grow the range (at least doubling, so re-binning stays rare) and move
    // each old bin's count to the new bin holding its centre.
    const double new_max =
        hist_max_ > 0 ? std::max(batch_max, 2 * hist_max_) : batch_max;
    std::vector<double> grown(bins, 0.0);
    if (hist_max_ > 0) {
      const double old_width = hist_max_ / bins;
      const double new_width = new_max / bins;
      for (int64_t i = 0; i < bins; ++i) {
        const int64_t j = std::min<int64_t>(
            bins - 1, static_cast<int64_t>((i + 0.5) * old_width / new_width));
        grown[j] += hist_[i];
      }
    }
    hist_ = std::move(grown);
    hist_max_ = new_max;
  }
  if (hist_max_ <= 0) {
    hist_[0] += magnitudes.numel();  // every value is exactly zero
    return;
  }
  torch::Tensor counts =
      torch::histc(magnitudes, bins, 0, hist_max_).to(torch::kFloat64);
  auto c = counts.accessor<double, 1>();
  for (int64_t i = 0; i < bins; ++i) hist_[i] += c[i];
}

double RangeObserver::Amax() const {
  if (!seen_) return 0;
  if (options_.method == ObserverMethod::kMovingAverageMinMax) {
    return std::max(std::abs(min_), std::abs(max_));
  }
  double total = 0;
  for (double h : hist_) total += h;
  if (total <= 0 || hist_max_ <= 0) return 0;
  const double target = total * options_.percentile / 100.0;
  const double width = hist_max_ / hist_.size();
  double cumulative = 0;
  for (size_t i = 0; i < hist_.size(); ++i) {
    if (hist_[i] > 0 && cumulative + hist_[i] >= target) {
      const double inside = (target - cumulative) / hist_[i];
      return (i + inside) * width;
    }
    cumulative += hist_[i];
  }
  return hist_max_;
}

}  // namespace distill::student::qat
