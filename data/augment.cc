#include "data/augment.h"

#include <torch/torch.h>

#include <cstdint>
#include <vector>

#include "common/mix64.h"

namespace distill::data {
namespace {

// A per-sample SplitMix64 stream. Hand-rolled rather than std::mt19937_64 +
// std::uniform_int_distribution because the distributions are
// implementation-defined, and the draws must not change with the standard
// library.
class SampleRng {
 public:
  SampleRng(uint64_t seed, int64_t epoch, int64_t id)
      : state_(Mix64(Mix64(Mix64(seed) ^ static_cast<uint64_t>(epoch)) ^
                     static_cast<uint64_t>(id))) {}

  uint64_t Next() {
    state_ += kGoldenGamma;
    return Mix64(state_);
  }
  // Uniform in [0, n); the modulo bias for n <= 2^8 is below 2^-56.
  int64_t Below(int64_t n) {
    return static_cast<int64_t>(Next() % static_cast<uint64_t>(n));
  }

 private:
  uint64_t state_;
};

}  // namespace

torch::Tensor Augment(const torch::Tensor& inputs, const torch::Tensor& ids,
                      uint64_t seed, int64_t epoch,
                      const AugmentOptions& options, float pad_value) {
  const int64_t pad = options.crop_padding;
  if (!options.enabled || (pad == 0 && !options.horizontal_flip)) {
    return inputs;
  }
  TORCH_CHECK(inputs.dim() == 4, "Augment: inputs must be [N, C, H, W], got ",
              inputs.sizes());
  TORCH_CHECK(ids.dim() == 1 && ids.size(0) == inputs.size(0),
              "Augment: ids must be [N] with N = ", inputs.size(0), ", got ",
              ids.sizes());
  TORCH_CHECK(pad >= 0, "Augment: crop_padding must be >= 0, got ", pad);

  const int64_t n = inputs.size(0);
  const int64_t height = inputs.size(2);
  const int64_t width = inputs.size(3);
  const torch::Tensor cpu_ids = ids.to(torch::kCPU, torch::kLong).contiguous();
  const int64_t* id_data = cpu_ids.data_ptr<int64_t>();
  // Pad the whole batch once; each sample then is a view into it.
  const torch::Tensor padded =
      pad > 0 ? torch::constant_pad_nd(inputs, {pad, pad, pad, pad}, pad_value)
              : inputs;

  std::vector<torch::Tensor> samples;
  samples.reserve(n);
  for (int64_t i = 0; i < n; ++i) {
    SampleRng rng(seed, epoch, id_data[i]);
    // Draw both values even when unused so that enabling one transform does
    // not shift the other's draws.
    const int64_t top = rng.Below(2 * pad + 1);
    const int64_t left = rng.Below(2 * pad + 1);
    const bool flip = options.horizontal_flip && (rng.Next() >> 63) != 0;
    torch::Tensor sample =
        padded[i].narrow(1, top, height).narrow(2, left, width);
    if (flip) sample = sample.flip({2});
    samples.push_back(sample);
  }
  return torch::stack(samples);
}

}  // namespace distill::data
