// Range observers for activation quantizers: they watch the tensors that
// reach a quantization point and propose its amax, the largest magnitude
// kept unclipped (the scale is amax / 127, see fake_quant.h). Two methods:
//  - moving-average min/max (PyTorch's MovingAverageMinMaxObserver): the
//    first batch sets min and max, each later one moves them by
//    c * (batch value - current); amax = max(|min|, |max|);
//  - percentile: a histogram of |x| over everything observed; amax is the
//    value below which `percentile` % of the magnitudes fall (linear within
//    a bin), which ignores rare outliers.
// Not thread-safe: one owner (the quantized layer) observes at a time.
#ifndef DISTILL_STUDENT_QAT_OBSERVER_H_
#define DISTILL_STUDENT_QAT_OBSERVER_H_

#include <torch/torch.h>

#include <cstdint>
#include <vector>

namespace distill::student::qat {

enum class ObserverMethod { kMovingAverageMinMax, kPercentile };

struct ObserverOptions {
  // Default: moving-average min/max.
  ObserverMethod method = ObserverMethod::kMovingAverageMinMax;
  // Moving-average weight c of each new batch, in (0, 1]. Default: 0.01.
  double averaging_constant = 0.01;
  // Percentile of |x| kept unclipped, in (0, 100]. Default: 99.99.
  double percentile = 99.99;
  // Histogram bins of the percentile method, >= 16. Default: 2048.
  int64_t bins = 2048;
};

class RangeObserver {
 public:
  explicit RangeObserver(const ObserverOptions& options = {});

  // Records a batch (read only; no gradient flows). Non-finite values are
  // ignored.
  void Observe(const torch::Tensor& x);
  // True until the first Observe with a finite value.
  bool empty() const { return !seen_; }
  // The proposed amax (0 when empty).
  double Amax() const;

  // The running min and max of the moving-average method.
  double min() const { return min_; }
  double max() const { return max_; }

 private:
  void AddToHistogram(const torch::Tensor& magnitudes, double batch_max);

  ObserverOptions options_;
  bool seen_ = false;
  double min_ = 0;
  double max_ = 0;
  // Counts of |x| in `bins` equal bins over [0, hist_max_].
  std::vector<double> hist_;
  double hist_max_ = 0;
};

}  // namespace distill::student::qat

#endif  // DISTILL_STUDENT_QAT_OBSERVER_H_
