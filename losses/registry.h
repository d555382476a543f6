// The loss registry: named, described loss factories. Built-in losses
// register themselves at static-initialization time with
// DISTILL_REGISTER_LOSS; plugins register through the same Register call.
// All methods are thread-safe.
#ifndef DISTILL_LOSSES_REGISTRY_H_
#define DISTILL_LOSSES_REGISTRY_H_

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "losses/loss.h"

namespace distill::losses {

// A parameter a loss accepts, with its default and inclusive bounds.
struct ParamSpec {
  std::string name;
  double default_value = 0.0;
  double min_value = 0.0;
  double max_value = 0.0;
  std::string description;
};

struct LossEntry {
  std::string name;
  std::string description;
  // True when the loss reads teacher targets.
  bool needs_teacher = false;
  std::vector<ParamSpec> params;
  // Receives every declared parameter, defaults filled in.
  std::function<std::unique_ptr<Loss>(const LossParams&)> factory;
};

class LossRegistry {
 public:
  // The process-wide registry (never destroyed).
  static LossRegistry& Global();

  // AlreadyExists when the name is taken; InvalidArgument for an empty name,
  // a missing factory, or a parameter whose default lies outside its bounds.
  absl::Status Register(LossEntry entry);

  // NotFound listing the known names when `name` is unknown;
  // InvalidArgument naming the parameter when one is unknown or out of
  // bounds.
  absl::StatusOr<std::unique_ptr<Loss>> Create(const std::string& name,
                                               const LossParams& params) const;

  // A copy of the entry (without calling its factory), or NotFound.
  absl::StatusOr<LossEntry> Find(const std::string& name) const;

  // Sorted names.
  std::vector<std::string> Names() const;

 private:
  mutable absl::Mutex mu_;
  absl::flat_hash_map<std::string, LossEntry> entries_ ABSL_GUARDED_BY(mu_);
};

namespace internal {
// Registers at static-init time; aborts with a message on a duplicate name,
// since that is a programming error in the binary itself.
bool RegisterBuiltin(LossEntry entry);
}  // namespace internal

}  // namespace distill::losses

// Registers a built-in loss. `make_entry` is an expression yielding a
// LossEntry, e.g. DISTILL_REGISTER_LOSS(kd_kl, KdKlEntry()).
#define DISTILL_REGISTER_LOSS(id, make_entry)                       \
  [[maybe_unused]] static const bool distill_loss_registered_##id = \
      ::distill::losses::internal::RegisterBuiltin(make_entry)

#endif  // DISTILL_LOSSES_REGISTRY_H_
