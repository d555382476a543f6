// A loss plugin built for a future API version (999), with its mark and
// entry written by hand as a newer header's macro would, and a static
// constructor that aborts. Used by plugin_loader_test: the loader must
// refuse it from its mark, before loading it runs that constructor, and
// without calling its register function.
#include <cstdlib>

#include "losses/plugin.h"

namespace {

absl::Status NeverCalled(distill::losses::LossRegistry&) { std::abort(); }

__attribute__((constructor)) void AbortWhenLoaded() { std::abort(); }

__attribute__((used, section(DISTILL_LOSS_PLUGIN_SECTION)))
const DistillLossPluginMark kMark = {{'d', 'i', 's', 't', 'i', 'l', 'l', '\0'},
                                     999};

}  // namespace

extern "C" __attribute__((visibility("default"))) DistillLossPluginEntry
distill_loss_plugin_entry() {
  return DistillLossPluginEntry{999, &NeverCalled};
}
