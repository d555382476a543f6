// Training-time augmentation: random crop with padding and horizontal flip.
// The random draws are a pure function of (seed, epoch, sample id), so a
// resumed or re-sharded run augments every sample exactly as before.
#ifndef DISTILL_DATA_AUGMENT_H_
#define DISTILL_DATA_AUGMENT_H_

#include <torch/torch.h>

#include <cstdint>

namespace distill::data {

struct AugmentOptions {
  // Default: false (inputs pass through untouched).
  bool enabled = false;
  // Pixels of padding on each side before a random crop back to the input
  // size; 0 disables cropping. Default: 2.
  int64_t crop_padding = 2;
  // Flip left-right with probability 1/2. Default: true.
  bool horizontal_flip = true;
};

// Returns augmented copies of `inputs` ([N, C, H, W] float); `ids` ([N]
// int64) picks each sample's random stream. Padding uses `pad_value`.
torch::Tensor Augment(const torch::Tensor& inputs, const torch::Tensor& ids,
                      uint64_t seed, int64_t epoch,
                      const AugmentOptions& options, float pad_value);

}  // namespace distill::data

#endif  // DISTILL_DATA_AUGMENT_H_
