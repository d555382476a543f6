// Loads loss plugins (losses/plugin.h) into a loss registry. Every plugin a
// job names is loaded on every rank before the job config is validated, so
// its loss names are usable in the config's loss terms. Loaded libraries
// stay loaded for the life of the process (their code backs the registered
// factories and the losses they made). Thread-safe.
#ifndef DISTILL_LOSSES_PLUGIN_LOADER_H_
#define DISTILL_LOSSES_PLUGIN_LOADER_H_

#include <string>

#include "absl/status/status.h"
#include "losses/registry.h"

namespace distill::losses {

// Loads the shared library at `path` (a relative path is taken from the
// current directory) and registers its losses in `registry`, all or none.
// Errors:
//   NotFound            no file at `path`;
//   InvalidArgument     the file cannot be loaded (dlerror's reason), it
//                       exports no distill_loss_plugin_entry, or its register
//                       function fails;
//   FailedPrecondition  it was built for another plugin API version;
//   AlreadyExists       one of its loss names is already in `registry`
//                       (also when the same plugin is loaded twice).
// Every message names the plugin's path.
absl::Status LoadLossPlugin(const std::string& path, LossRegistry& registry);

}  // namespace distill::losses

#endif  // DISTILL_LOSSES_PLUGIN_LOADER_H_
