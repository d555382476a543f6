// A loss plugin built for a future API version (999), with the entry written
// by hand as a newer header's macro would. Used by plugin_loader_test: the
// loader must refuse it without calling its register function.
#include <cstdlib>

#include "losses/plugin.h"

namespace {

absl::Status NeverCalled(distill::losses::LossRegistry&) { std::abort(); }

}  // namespace

extern "C" __attribute__((visibility("default"))) DistillLossPluginEntry
distill_loss_plugin_entry() {
  return DistillLossPluginEntry{999, &NeverCalled};
}
