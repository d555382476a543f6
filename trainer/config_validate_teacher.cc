// ValidateJobConfig's checks of the teacher section: in-process teachers,
// teacher servers, their encoding, timeouts and target cache.
#include <set>
#include <string>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "trainer/config.h"
#include "trainer/internal/config_checks.h"

namespace distill::trainer {
namespace {

using ::distill::v1::TeacherCacheConfig;
using ::distill::v1::TeacherConfig;

// "host:port" with a non-empty host and a port in [1, 65535]; IPv6 hosts in
// brackets ("[::1]:5001").
bool IsHostPort(const std::string& endpoint) {
  const size_t colon = endpoint.rfind(':');
  if (colon == std::string::npos || colon == 0) return false;
  int port = 0;
  return absl::SimpleAtoi(endpoint.substr(colon + 1), &port) && port >= 1 &&
         port <= 65535;
}

// SAMPLED targets estimate p_T without bias, so only losses linear in p_T
// keep their expected gradient; the built-in ones that are not are refused
// here, before any work (a plugin loss is asked at its first step).
absl::Status CheckSampledLosses(const JobConfig& c) {
  static const std::set<std::string>* nonlinear =
      new std::set<std::string>{"reverse_kl", "js", "tvd", "dkd", "mse_logits"};
  for (int i = 0; i < c.loss_size(); ++i) {
    const auto& params = c.loss(i).params();
    // generalized_jsd is kd_kl at beta = 0 and nonlinear otherwise (its
    // default beta is 0.5).
    const bool jsd = c.loss(i).name() == "generalized_jsd" &&
                     !(params.count("beta") > 0 && params.at("beta") == 0);
    if (jsd || nonlinear->count(c.loss(i).name()) > 0) {
      return Bad(absl::StrCat("loss[", i, "]"),
                 absl::StrCat(c.loss(i).name(),
                              " is not linear in the teacher's probabilities, "
                              "so teacher.encoding SAMPLED would bias it; "
                              "use kd_kl or soft_ce, or DENSE/TOP_K targets"));
    }
  }
  return absl::OkStatus();
}

// An in-process teacher: its model, its ensemble, and none of the
// settings that only teacher servers take (but a target store's encoding).
// With a target store the model is optional: runs read the store.
absl::Status ValidateInProcessTeacher(const TeacherConfig& t) {
  const bool stored = !t.store_dir().empty();
  if (!t.has_model()) {
    if (stored && t.ensemble_size() == 0) return absl::OkStatus();
    return Bad("teacher",
               "needs `model` (run in this process), "
               "`endpoints`/`registry_dir` (teacher servers) or `store_dir` "
               "(a target store)");
  }
  DISTILL_RETURN_IF_ERROR(
      ValidateModel(t.model(), "teacher.model", /*weights_required=*/true));
  for (int i = 0; i < t.ensemble_size(); ++i) {
    DISTILL_RETURN_IF_ERROR(
        ValidateModel(t.ensemble(i), absl::StrCat("teacher.ensemble[", i, "]"),
                      /*weights_required=*/true));
  }
  const std::string remote_only =
      "applies to teacher servers only (set teacher.endpoints or "
      "teacher.registry_dir)";
  if (!stored) {
    if (t.encoding() != TeacherConfig::ENCODING_UNSPECIFIED) {
      return Bad("teacher.encoding", remote_only);
    }
    if (t.top_k() != 0) return Bad("teacher.top_k", remote_only);
    if (t.samples() != 0) return Bad("teacher.samples", remote_only);
  }
  if (!t.token_file().empty()) return Bad("teacher.token_file", remote_only);
  if (!t.tls_ca_file().empty()) {
    return Bad("teacher.tls_ca_file", remote_only);
  }
  if (t.has_cache() && t.cache().mode() != TeacherCacheConfig::NONE) {
    return Bad("teacher.cache.mode", remote_only);
  }
  if (t.has_max_answer_bytes()) {
    return Bad("teacher.max_answer_bytes", remote_only);
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ValidateTeacher(const JobConfig& c) {
  const TeacherConfig& t = c.teacher();
  if (!IsRemoteTeacher(t)) {
    DISTILL_RETURN_IF_ERROR(ValidateInProcessTeacher(t));
  } else if (t.has_model()) {
    return Bad("teacher.model",
               "must be unset when teacher.endpoints or teacher.registry_dir "
               "name teacher servers (the servers load the model)");
  } else if (t.ensemble_size() > 0) {
    return Bad("teacher.ensemble",
               "applies to in-process teachers only (teacher.model); teacher "
               "servers each serve one model");
  }
  std::set<std::string> seen;
  for (int i = 0; i < t.endpoints_size(); ++i) {
    const std::string path = absl::StrCat("teacher.endpoints[", i, "]");
    if (!IsHostPort(t.endpoints(i))) {
      return Bad(path, absl::StrCat("must be host:port with a port in [1, "
                                    "65535] (got '",
                                    t.endpoints(i), "')"));
    }
    if (!seen.insert(t.endpoints(i)).second) {
      return Bad(path, absl::StrCat("'", t.endpoints(i), "' is listed twice"));
    }
  }
  if (t.encoding() == TeacherConfig::TOP_K ||
      t.encoding() == TeacherConfig::TOP_K_PACKED) {
    DISTILL_RETURN_IF_ERROR(CheckRange(
        "teacher.top_k", t.top_k(),
        Range::AtLeast(1).Noted(absl::StrCat(
            "with encoding ", TeacherConfig::Encoding_Name(t.encoding())))));
  } else if (t.top_k() != 0) {
    return Bad("teacher.top_k",
               "applies to encodings TOP_K and TOP_K_PACKED only");
  }
  if (t.encoding() == TeacherConfig::SAMPLED) {
    DISTILL_RETURN_IF_ERROR(
        CheckRange("teacher.samples", t.samples(),
                   Range::Closed(1, 255).Noted("with encoding SAMPLED")));
    DISTILL_RETURN_IF_ERROR(CheckSampledLosses(c));
  } else if (t.samples() != 0) {
    return Bad("teacher.samples", "applies to encoding SAMPLED only");
  }
  // Hidden states come from servers, or from a store written through them.
  if (t.encoding() == TeacherConfig::HIDDEN_FP16 &&
      (c.data().dataset() != "tokens" ||
       (!IsRemoteTeacher(t) && (t.store_dir().empty() || t.has_model())))) {
    return Bad("teacher.encoding",
               "HIDDEN_FP16 applies to language models (data.dataset "
               "\"tokens\") served by teacher servers (teacher.endpoints "
               "or teacher.registry_dir), or to a target store written "
               "through them: an in-process teacher computes its "
               "probabilities directly");
  }
  DISTILL_RETURN_IF_ERROR(CheckRange(
      "teacher.prefetch_batches", t.prefetch_batches(), Range::Closed(0, 64)));
  DISTILL_RETURN_IF_ERROR(CheckRange("teacher.connect_timeout_seconds",
                                     t.connect_timeout_seconds(),
                                     SecondsRange()));
  DISTILL_RETURN_IF_ERROR(CheckRange("teacher.failover_grace_seconds",
                                     t.failover_grace_seconds(),
                                     SecondsRange()));
  DISTILL_RETURN_IF_ERROR(CheckRange("teacher.answer_timeout_seconds",
                                     t.answer_timeout_seconds(),
                                     SecondsRange()));
  DISTILL_RETURN_IF_ERROR(CheckRange("teacher.max_attempts", t.max_attempts(),
                                     Range::Closed(1, 100)));
  if (IsRemoteTeacher(t)) {
    DISTILL_RETURN_IF_ERROR(CheckRange("teacher.max_answer_bytes",
                                       t.max_answer_bytes(),
                                       Range::AtLeast(65536)));
  }
  const TeacherCacheConfig& cache = t.cache();
  if (!t.store_dir().empty()) {
    if (c.data().dataset() != "tokens") {
      return Bad("teacher.store_dir",
                 "applies to token data (data.dataset \"tokens\"); image "
                 "jobs reuse targets with teacher.cache");
    }
    if (c.has_temperature_schedule()) {
      return Bad("teacher.store_dir",
                 "needs a constant temperature: a store holds targets at "
                 "one temperature, and temperature_schedule changes it");
    }
  }
  if (cache.mode() == TeacherCacheConfig::MEMORY ||
      cache.mode() == TeacherCacheConfig::DISK) {
    if (c.data().augment().enabled()) {
      return Bad("teacher.cache.mode",
                 "needs data.augment.enabled false: augmented inputs get new "
                 "targets every epoch");
    }
    if (c.has_temperature_schedule()) {
      return Bad("teacher.cache.mode",
                 "needs a constant temperature: temperature_schedule changes "
                 "the targets every step");
    }
  }
  if (!cache.dir().empty() && cache.mode() != TeacherCacheConfig::DISK) {
    return Bad("teacher.cache.dir", "applies to cache mode DISK only");
  }
  return absl::OkStatus();
}

}  // namespace distill::trainer
