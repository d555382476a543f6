// A library whose plugin-mark section holds 3 bytes instead of a mark, and a
// static constructor that aborts. Used by plugin_loader_test: the loader
// must refuse it from the file, without loading it.
#include <cstdlib>

#include "losses/plugin.h"

namespace {

__attribute__((constructor)) void AbortWhenLoaded() { std::abort(); }

__attribute__((used, section(DISTILL_LOSS_PLUGIN_SECTION)))
const char kNotAMark[3] = {'v', '3', '\0'};

}  // namespace

extern "C" __attribute__((visibility("default"))) DistillLossPluginEntry
distill_loss_plugin_entry() {
  std::abort();
}
