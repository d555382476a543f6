// The C allocator tuned for tensor workloads. glibc's malloc hands every
// block over 32 MiB (less before its threshold adapts) to mmap and gives it
// back with munmap on free, and trims the heap's top whenever 128 KiB are
// free there. A training step allocates and frees the same large tensors
// (a chunk of a language model's head logits was 1,024 x 8,192 floats when
// this was measured) every step, so each one comes back as fresh pages the
// kernel must fault in and zero: measured on the 2-core machine, a third of the
// LM student's step was page faults, and the step ran 5x slower than with the
// heap kept (docs/BENCHMARKS.md). PyTorch users get the same effect by
// preloading jemalloc or tcmalloc; this does it with glibc's own knobs.
#ifndef DISTILL_COMMON_MALLOC_TUNING_H_
#define DISTILL_COMMON_MALLOC_TUNING_H_

#include <string>

namespace distill {

// Keeps freed memory in the heap for reuse: no mmap for large blocks, and
// no trimming below 1 GiB. Call first thing in main(). Does nothing, and says
// why in the returned text, when the C library is not glibc or the user chose
// the allocator's settings (any MALLOC_* variable, GLIBC_TUNABLES naming
// glibc.malloc, or DISTILL_KEEP_MALLOC set); returns "" when it tuned.
std::string TuneMallocForTensors();

}  // namespace distill

#endif  // DISTILL_COMMON_MALLOC_TUNING_H_
