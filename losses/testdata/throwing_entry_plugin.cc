// A loss plugin whose entry function throws. Used by plugin_loader_test: the
// loader must turn that into an error naming the plugin, not terminate.
#include <stdexcept>

#include "losses/plugin.h"

namespace {

__attribute__((used, section(DISTILL_LOSS_PLUGIN_SECTION)))
const DistillLossPluginMark kMark = {
    {'d', 'i', 's', 't', 'i', 'l', 'l', '\0'},
    distill::losses::kDistillLossPluginApiVersion};

}  // namespace

extern "C" __attribute__((visibility("default"))) DistillLossPluginEntry
distill_loss_plugin_entry() {
  throw std::runtime_error("the entry of this plugin fails");
}
