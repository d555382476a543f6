// Label conventions shared by the data readers, the losses and the metrics.
#ifndef DISTILL_COMMON_LABELS_H_
#define DISTILL_COMMON_LABELS_H_

#include <cstdint>

namespace distill {

// A label no loss or metric counts (positions past the end of a token file),
// as torch's cross_entropy's ignore_index.
inline constexpr int64_t kIgnoreLabel = -100;

}  // namespace distill

#endif  // DISTILL_COMMON_LABELS_H_
