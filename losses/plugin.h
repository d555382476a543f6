// The loss plugin API: what a shared library implements so that `distill`
// can load its losses at run time (`--loss_plugin PATH` or the job config's
// `plugins`), without rebuilding the framework. Loading is in
// losses/plugin_loader.h; docs/PLUGINS.md has a worked example.
//
// A plugin is one C++ file built as a MODULE library:
//
//   #include "losses/plugin.h"
//
//   absl::Status RegisterLosses(distill::losses::LossRegistry& registry) {
//     distill::losses::LossEntry entry;
//     entry.name = "my_loss";               // the name configs use
//     entry.description = "...";
//     entry.needs_teacher = true;            // reads LossInputs::teacher
//     entry.params = {{"eps", 1e-8, 0.0, 1.0, "..."}};  // name, default,
//                                                       // min, max (inclusive)
//     entry.factory = [](const distill::losses::LossParams& params) {
//       return std::make_unique<MyLoss>(params.at("eps"));
//     };
//     return registry.Register(std::move(entry));
//   }
//   DISTILL_LOSS_PLUGIN(RegisterLosses);
//
// The interface a loss implements is `Loss` (losses/loss.h): a const,
// thread-safe Compute(LossInputs) returning a float scalar or a Status.
// LossInputs carries
//   * student_logits: float [N, C] or [N, S, V], requiring grad in training;
//   * teacher: null without a teacher, else TeacherTargets
//     (losses/teacher_targets.h) in dense form (probs = softmax(z / T)) or
//     top-k form (values, indices, tail_mass), with their temperature T;
//   * labels: int64 [N] or [N, S];
//   * step and epoch (0-based) and the run's total_steps, for schedules
//     (losses/schedule.h evaluates CONSTANT, LINEAR and COSINE ones).
// Parameters are declared in LossEntry::params (ParamSpec: name, default,
// inclusive bounds). The framework refuses an unknown parameter or one out of
// bounds in the job config before training starts, and the factory receives
// every declared parameter with the defaults filled in.
//
// ABI contract. The plugin and `distill` share C++ types (std::string,
// std::function, torch::Tensor, absl::Status), so a plugin must be built with
// the same compiler, standard library, LibTorch and Abseil as the framework,
// against the headers of the same distill release; the API version below
// catches changes to these headers, not a different toolchain. The plugin's
// calls into the framework (LossRegistry::Register and any non-inline
// function of these headers) are resolved against the loading executable, so
// executables that load plugins are linked with ENABLE_EXPORTS (-rdynamic);
// `distill` is. A plugin leaves those symbols undefined (a MODULE library
// does by default) and links LibTorch and Abseil like the framework does.
//
// Thread-safety: a plugin's register function is called once per load, on
// the loading thread; the losses it creates must be thread-safe (Loss).
#ifndef DISTILL_LOSSES_PLUGIN_H_
#define DISTILL_LOSSES_PLUGIN_H_

#include <cstdint>

#include "absl/status/status.h"
#include "losses/loss.h"
#include "losses/registry.h"
#include "losses/teacher_targets.h"

namespace distill::losses {

// Bumped whenever loss.h, teacher_targets.h, registry.h or the entry below
// change in a way a built plugin would notice.
// 3: the version is also in the plugin mark below.
inline constexpr int kDistillLossPluginApiVersion = 3;

// Registers the plugin's losses. The registry passed in is a staging one:
// the loader moves its entries into the job's registry only when every name
// is free, so a plugin never half-registers.
using LossPluginRegisterFn = absl::Status (*)(LossRegistry& registry);

}  // namespace distill::losses

extern "C" {

// What the entry symbol returns. `api_version` stays the first member in
// every version, so the loader can read it before trusting the rest.
struct DistillLossPluginEntry {
  int api_version;
  distill::losses::LossPluginRegisterFn register_losses;
};

// The plugin mark: the API version again, in an ELF section of its own
// (DISTILL_LOSS_PLUGIN_SECTION), where the loader reads it from the file
// before loading it. A plugin's static constructors run at dlopen, so a
// plugin of another version is refused before any of its code runs. The
// section holds exactly one mark; the entry returns the mark's version, so
// a linker that drops unreferenced sections (--gc-sections) keeps it.
struct DistillLossPluginMark {
  char magic[8];  // "distill" and its NUL
  int32_t api_version;
};

}  // extern "C"

#define DISTILL_LOSS_PLUGIN_SECTION ".distill_plugin"

// The one symbol a plugin exports; its name is what the loader looks up.
#define DISTILL_LOSS_PLUGIN_ENTRY_SYMBOL "distill_loss_plugin_entry"

// Defines the plugin's entry: `register_fn` is an
// absl::Status(distill::losses::LossRegistry&) function. Use once per plugin,
// at namespace scope.
#define DISTILL_LOSS_PLUGIN(register_fn)                                    \
  __attribute__((                                                           \
      used,                                                                 \
      section(                                                              \
          DISTILL_LOSS_PLUGIN_SECTION))) static const DistillLossPluginMark \
      distill_loss_plugin_mark = {                                          \
          {'d', 'i', 's', 't', 'i', 'l', 'l', '\0'},                        \
          ::distill::losses::kDistillLossPluginApiVersion};                 \
  extern "C" __attribute__((visibility("default"))) DistillLossPluginEntry  \
  distill_loss_plugin_entry() {                                             \
    return DistillLossPluginEntry{distill_loss_plugin_mark.api_version,     \
                                  &(register_fn)};                          \
  }

#endif  // DISTILL_LOSSES_PLUGIN_H_
