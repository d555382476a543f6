#include "losses/plugin_loader.h"

#include <dlfcn.h>

#include <exception>
#include <filesystem>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "losses/plugin.h"

namespace distill::losses {
namespace {

using EntryFn = DistillLossPluginEntry (*)();

std::string DlError() {
  const char* error = dlerror();
  return error != nullptr ? error : "unknown dlopen error";
}

// Calls the plugin's register function on a staging registry, so a plugin
// whose second loss clashes leaves none of its losses behind.
absl::Status RegisterFrom(const std::string& path, LossPluginRegisterFn fn,
                          LossRegistry& registry) {
  LossRegistry staging;
  absl::Status status;
  try {
    status = fn(staging);
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(
        "loss plugin ", path, " threw while registering: ", e.what()));
  } catch (...) {
    return absl::InvalidArgumentError(
        absl::StrCat("loss plugin ", path, " threw while registering"));
  }
  if (!status.ok()) {
    return absl::Status(
        status.code() == absl::StatusCode::kAlreadyExists
            ? absl::StatusCode::kAlreadyExists
            : absl::StatusCode::kInvalidArgument,
        absl::StrCat("loss plugin ", path,
                     " failed to register its losses: ", status.message()));
  }
  std::vector<LossEntry> entries;
  for (const std::string& name : staging.Names()) {
    if (registry.Find(name).ok()) {
      return absl::AlreadyExistsError(
          absl::StrCat("loss plugin ", path, " registers loss '", name,
                       "', which is already registered"));
    }
    absl::StatusOr<LossEntry> entry = staging.Find(name);
    if (!entry.ok()) return entry.status();
    entries.push_back(*std::move(entry));
  }
  for (LossEntry& entry : entries) {
    const std::string name = entry.name;
    absl::Status added = registry.Register(std::move(entry));
    if (!added.ok()) {
      // Only a concurrent load of another plugin can get here.
      return absl::AlreadyExistsError(
          absl::StrCat("loss plugin ", path, " registers loss '", name,
                       "', which is already registered"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status LoadLossPlugin(const std::string& path, LossRegistry& registry) {
  std::error_code error;
  if (!std::filesystem::is_regular_file(path, error)) {
    return absl::NotFoundError(absl::StrCat("loss plugin not found: ", path));
  }
  // dlopen searches the library path for a bare name; "./" keeps a relative
  // path relative to the current directory, as documented.
  const std::string open_path =
      path.find('/') == std::string::npos ? "./" + path : path;
  // RTLD_LOCAL: two plugins may use the same internal symbol names.
  void* handle = dlopen(open_path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (handle == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot load loss plugin ", path, ": ", DlError()));
  }
  dlerror();
  void* symbol = dlsym(handle, DISTILL_LOSS_PLUGIN_ENTRY_SYMBOL);
  if (symbol == nullptr) {
    dlclose(handle);
    return absl::InvalidArgumentError(
        absl::StrCat(path, " is not a distill loss plugin: it exports no ",
                     DISTILL_LOSS_PLUGIN_ENTRY_SYMBOL));
  }
  // The entry is the plugin's code: whatever it throws stays here.
  DistillLossPluginEntry entry{};
  try {
    entry = reinterpret_cast<EntryFn>(symbol)();
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(
        "loss plugin ", path, " threw in its entry function: ", e.what()));
  } catch (...) {
    return absl::InvalidArgumentError(
        absl::StrCat("loss plugin ", path, " threw in its entry function"));
  }
  if (entry.api_version != kDistillLossPluginApiVersion) {
    dlclose(handle);
    return absl::FailedPreconditionError(
        absl::StrCat("loss plugin ", path, " was built for plugin API version ",
                     entry.api_version, " but this distill has version ",
                     kDistillLossPluginApiVersion,
                     "; rebuild it against this release's ", "headers"));
  }
  if (entry.register_losses == nullptr) {
    dlclose(handle);
    return absl::InvalidArgumentError(absl::StrCat(
        "loss plugin ", path, " has no register function in its entry"));
  }
  // From here on the handle is never closed, not even on failure: the
  // staging registry and any loss already made may hold the plugin's code.
  return RegisterFrom(path, entry.register_losses, registry);
}

}  // namespace distill::losses
