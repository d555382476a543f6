// SplitMix64's output function: a bijective 64-bit mixer with full
// avalanche, so nearby inputs ((seed, epoch, id), (seed, step)) give
// unrelated outputs. The draws that must be pure functions of their
// coordinates (augmentation, on-policy steps) are built on it, with no
// dependence on the standard library's distributions. Thread-safe.
#ifndef DISTILL_COMMON_MIX64_H_
#define DISTILL_COMMON_MIX64_H_

#include <cstdint>

namespace distill {

inline constexpr uint64_t kGoldenGamma = 0x9e3779b97f4a7c15ULL;

inline uint64_t Mix64(uint64_t x) {
  x += kGoldenGamma;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

}  // namespace distill

#endif  // DISTILL_COMMON_MIX64_H_
