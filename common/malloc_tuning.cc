#include "common/malloc_tuning.h"

#include <cstdlib>
#include <cstring>
#include <string>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

extern char** environ;

namespace distill {

std::string TuneMallocForTensors() {
#if defined(__GLIBC__)
  if (std::getenv("DISTILL_KEEP_MALLOC") != nullptr) {
    return "DISTILL_KEEP_MALLOC is set";
  }
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
    const char* var = *e;
    const char* eq = std::strchr(var, '=');
    if (eq == nullptr) continue;
    const std::string name(var, eq - var);
    if (name.rfind("MALLOC_", 0) == 0) {
      return name + " is set";
    }
    if (name == "GLIBC_TUNABLES" &&
        std::strstr(eq, "glibc.malloc") != nullptr) {
      return "GLIBC_TUNABLES sets glibc.malloc";
    }
  }
  // Every block from the heap (glibc still falls back to mmap when the heap
  // cannot grow), and the heap trimmed only past 1 GiB free at its top:
  // freed tensors are reused, not faulted in again.
  if (mallopt(M_MMAP_MAX, 0) != 1 || mallopt(M_TRIM_THRESHOLD, 1 << 30) != 1 ||
      mallopt(M_TOP_PAD, 64 << 20) != 1) {
    return "mallopt refused the settings";
  }
  return "";
#else
  return "the C library is not glibc";
#endif
}

}  // namespace distill
