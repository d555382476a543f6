#include "losses/registry.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace distill::losses {
namespace {

bool InBounds(const ParamSpec& spec, double value) {
  // Written so that NaN is out of bounds.
  return value >= spec.min_value && value <= spec.max_value;
}

std::string ParamNames(const std::vector<ParamSpec>& params) {
  if (params.empty()) return "(none)";
  std::vector<std::string> names;
  names.reserve(params.size());
  for (const ParamSpec& spec : params) names.push_back(spec.name);
  return absl::StrJoin(names, ", ");
}

}  // namespace

LossRegistry& LossRegistry::Global() {
  static auto* r = new LossRegistry;
  return *r;
}

absl::Status LossRegistry::Register(LossEntry entry) {
  if (entry.name.empty()) {
    return absl::InvalidArgumentError("a loss needs a non-empty name");
  }
  if (!entry.factory) {
    return absl::InvalidArgumentError(
        absl::StrCat("loss '", entry.name, "' has no factory"));
  }
  absl::flat_hash_set<std::string> seen;
  for (const ParamSpec& spec : entry.params) {
    if (spec.name.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "loss '", entry.name, "' has a parameter without a name"));
    }
    if (!seen.insert(spec.name).second) {
      return absl::InvalidArgumentError(absl::StrCat("loss '", entry.name,
                                                     "' declares parameter '",
                                                     spec.name, "' twice"));
    }
    if (!InBounds(spec, spec.default_value)) {
      return absl::InvalidArgumentError(
          absl::StrCat("loss '", entry.name, "' parameter '", spec.name,
                       "' default ", spec.default_value, " is outside [",
                       spec.min_value, ", ", spec.max_value, "]"));
    }
  }
  absl::MutexLock lock(&mu_);
  if (entries_.contains(entry.name)) {
    return absl::AlreadyExistsError(
        absl::StrCat("loss '", entry.name, "' is already registered"));
  }
  std::string name = entry.name;
  entries_.emplace(std::move(name), std::move(entry));
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Loss>> LossRegistry::Create(
    const std::string& name, const LossParams& params) const {
  // The factory runs outside the lock: it is user code and may be slow.
  absl::StatusOr<LossEntry> entry = Find(name);
  if (!entry.ok()) return entry.status();
  for (const auto& [param, value] : params) {
    auto spec = std::find_if(
        entry->params.begin(), entry->params.end(),
        [&param = param](const ParamSpec& s) { return s.name == param; });
    if (spec == entry->params.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat("loss '", name, "' has no parameter '", param,
                       "'; its parameters: ", ParamNames(entry->params)));
    }
    if (!InBounds(*spec, value)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "loss '", name, "' parameter '", param, "' = ", value,
          " is outside [", spec->min_value, ", ", spec->max_value, "]"));
    }
  }
  LossParams filled = params;
  for (const ParamSpec& spec : entry->params) {
    filled.emplace(spec.name, spec.default_value);
  }
  std::unique_ptr<Loss> loss = entry->factory(filled);
  if (loss == nullptr) {
    return absl::InternalError(
        absl::StrCat("the factory of loss '", name, "' returned null"));
  }
  return loss;
}

absl::StatusOr<LossEntry> LossRegistry::Find(const std::string& name) const {
  {
    absl::MutexLock lock(&mu_);
    auto it = entries_.find(name);
    if (it != entries_.end()) return it->second;
  }
  std::vector<std::string> known = Names();
  return absl::NotFoundError(
      absl::StrCat("unknown loss '", name, "'; known losses: ",
                   known.empty() ? "(none)" : absl::StrJoin(known, ", ")));
}

std::vector<std::string> LossRegistry::Names() const {
  std::vector<std::string> names;
  {
    absl::MutexLock lock(&mu_);
    names.reserve(entries_.size());
    for (const auto& [name, entry] : entries_) names.push_back(name);
  }
  std::sort(names.begin(), names.end());
  return names;
}

namespace internal {

bool RegisterBuiltin(LossEntry entry) {
  const std::string name = entry.name;
  absl::Status status = LossRegistry::Global().Register(std::move(entry));
  if (!status.ok()) {
    std::fprintf(stderr, "distill: cannot register built-in loss '%s': %s\n",
                 name.c_str(), status.ToString().c_str());
    std::abort();
  }
  return true;
}

}  // namespace internal
}  // namespace distill::losses
