#include "trainer/config.h"

#include <cmath>
#include <fstream>
#include <set>
#include <sstream>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/status.h"
#include "google/protobuf/io/tokenizer.h"
#include "google/protobuf/text_format.h"
#include "losses/registry.h"
#include "student/zoo.h"

namespace distill::trainer {
namespace {

using ::distill::v1::ModelConfig;
using ::distill::v1::TeacherCacheConfig;
using ::distill::v1::TeacherConfig;
using ::distill::v1::OptimizerConfig;
using ::distill::v1::ScheduleConfig;
using ::google::protobuf::Descriptor;
using ::google::protobuf::FieldDescriptor;
using ::google::protobuf::TextFormat;

class Collector : public google::protobuf::io::ErrorCollector {
 public:
  explicit Collector(std::string source) : source_(std::move(source)) {}
  void AddError(int line, int column, const std::string& message) override {
    errors_.push_back(
        absl::StrCat(source_, ":", line + 1, ":", column + 1, ": ", message));
  }
  void AddWarning(int line, int column, const std::string& message) override {}
  const std::vector<std::string>& errors() const { return errors_; }

 private:
  std::string source_;
  std::vector<std::string> errors_;
};

// A validation failure at a field path such as "loss[1].weight".
absl::Status Bad(const std::string& path, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat(path, " ", what));
}

absl::Status ValidateModel(const ModelConfig& model, const std::string& path,
                           bool weights_required) {
  switch (model.source_case()) {
    case ModelConfig::kArch: {
      const auto& entries = student::ZooEntries();
      std::vector<std::string> names;
      const student::ZooEntry* entry = nullptr;
      for (const auto& e : entries) {
        names.push_back(e.arch);
        if (e.arch == model.arch()) entry = &e;
      }
      if (entry == nullptr) {
        return Bad(path + ".arch",
                   absl::StrCat("'", model.arch(),
                                "' is not a known architecture; known: ",
                                absl::StrJoin(names, ", ")));
      }
      for (const auto& [name, value] : model.options()) {
        const student::ZooOption* opt = nullptr;
        std::vector<std::string> opt_names;
        for (const auto& o : entry->options) {
          opt_names.push_back(o.name);
          if (o.name == name) opt = &o;
        }
        if (opt == nullptr) {
          return Bad(path + ".options",
                     absl::StrCat("has '", name, "', which model '",
                                  model.arch(), "' does not take; its options: ",
                                  absl::StrJoin(opt_names, ", ")));
        }
        if (!(value >= opt->min_value && value <= opt->max_value)) {
          return Bad(absl::StrCat(path, ".options[", name, "]"),
                     absl::StrCat("must be in [", opt->min_value, ", ",
                                  opt->max_value, "] (got ", value, ")"));
        }
      }
      if (weights_required && model.weights().empty()) {
        return Bad(path + ".weights",
                   "is required: a teacher built from the zoo needs trained "
                   "weights (the model.pt of a TRAIN run)");
      }
      break;
    }
    case ModelConfig::kTorchscript:
      if (model.torchscript().empty()) {
        return Bad(path + ".torchscript", "must name a file");
      }
      if (!model.options().empty()) {
        return Bad(path + ".options",
                   "applies to zoo architectures only, not TorchScript files");
      }
      break;
    case ModelConfig::SOURCE_NOT_SET:
      return Bad(path, "needs `arch` (a zoo architecture) or `torchscript`");
  }
  return absl::OkStatus();
}

absl::Status ValidateOptimizer(const OptimizerConfig& opt) {
  if (!(opt.lr() > 0) || !std::isfinite(opt.lr())) {
    return Bad("optimizer.lr", absl::StrCat("must be > 0 (got ", opt.lr(), ")"));
  }
  if (!(opt.weight_decay() >= 0)) {
    return Bad("optimizer.weight_decay",
               absl::StrCat("must be >= 0 (got ", opt.weight_decay(), ")"));
  }
  if (!(opt.momentum() >= 0 && opt.momentum() < 1)) {
    return Bad("optimizer.momentum",
               absl::StrCat("must be in [0, 1) (got ", opt.momentum(), ")"));
  }
  if (opt.nesterov() && opt.momentum() == 0) {
    return Bad("optimizer.nesterov", "needs optimizer.momentum > 0");
  }
  if (!(opt.beta1() >= 0 && opt.beta1() < 1)) {
    return Bad("optimizer.beta1",
               absl::StrCat("must be in [0, 1) (got ", opt.beta1(), ")"));
  }
  if (!(opt.beta2() >= 0 && opt.beta2() < 1)) {
    return Bad("optimizer.beta2",
               absl::StrCat("must be in [0, 1) (got ", opt.beta2(), ")"));
  }
  if (!(opt.eps() > 0)) {
    return Bad("optimizer.eps", absl::StrCat("must be > 0 (got ", opt.eps(), ")"));
  }
  return absl::OkStatus();
}

absl::Status ValidateSchedule(const ScheduleConfig& s, double lr) {
  if (s.warmup_steps() < 0) {
    return Bad("lr_schedule.warmup_steps",
               absl::StrCat("must be >= 0 (got ", s.warmup_steps(), ")"));
  }
  if (s.step_epochs() < 1) {
    return Bad("lr_schedule.step_epochs",
               absl::StrCat("must be >= 1 (got ", s.step_epochs(), ")"));
  }
  if (!(s.gamma() > 0 && s.gamma() <= 1)) {
    return Bad("lr_schedule.gamma",
               absl::StrCat("must be in (0, 1] (got ", s.gamma(), ")"));
  }
  if (!(s.min_lr() >= 0 && s.min_lr() <= lr)) {
    return Bad("lr_schedule.min_lr",
               absl::StrCat("must be in [0, optimizer.lr] (got ", s.min_lr(),
                            ")"));
  }
  return absl::OkStatus();
}

// A schedule's type is required and its values must satisfy `ok`, which
// `rule` describes ("> 0", ">= 0").
absl::Status ValidateValueSchedule(const ::distill::v1::ValueSchedule& s,
                                   const std::string& path, bool (*ok)(double),
                                   const std::string& rule) {
  if (s.type() == ::distill::v1::ValueSchedule::TYPE_UNSPECIFIED) {
    return Bad(path + ".type", "is required: CONSTANT, LINEAR or COSINE");
  }
  if (!ok(s.start()) || !std::isfinite(s.start())) {
    return Bad(path + ".start",
               absl::StrCat("must be ", rule, " (got ", s.start(), ")"));
  }
  if (s.type() != ::distill::v1::ValueSchedule::CONSTANT &&
      (!ok(s.end()) || !std::isfinite(s.end()))) {
    return Bad(path + ".end",
               absl::StrCat("must be ", rule, " (got ", s.end(), ")"));
  }
  return absl::OkStatus();
}

bool Positive(double v) { return v > 0; }

// A teacher guides training in mode DISTILL, and the QAT stage of mode
// QUANTIZE when the config gives one.
bool HasTeacher(const JobConfig& c) {
  return c.mode() == JobConfig::DISTILL ||
         (c.mode() == JobConfig::QUANTIZE && c.has_teacher());
}

absl::Status ValidateQat(const JobConfig& c) {
  if (c.mode() == JobConfig::QUANTIZE && !c.has_qat()) {
    return Bad("qat", "is required in mode QUANTIZE");
  }
  if (!c.has_qat()) return absl::OkStatus();
  if (c.mode() == JobConfig::EVALUATE) {
    return Bad("qat", "is not used in mode EVALUATE");
  }
  if (c.student().has_torchscript()) {
    return Bad("qat",
               "supports zoo students only (student.arch): a TorchScript "
               "student's layers cannot be rewritten for quantization here");
  }
  const auto& q = c.qat();
  if (q.calibration_batches() < 1) {
    return Bad("qat.calibration_batches",
               absl::StrCat("must be >= 1 (got ", q.calibration_batches(), ")"));
  }
  if (q.epochs() < 0) {
    return Bad("qat.epochs", absl::StrCat("must be >= 0 (0: PTQ only) (got ",
                                          q.epochs(), ")"));
  }
  if (!(q.lr() > 0) || !std::isfinite(q.lr())) {
    return Bad("qat.lr", absl::StrCat("must be > 0 (got ", q.lr(), ")"));
  }
  if (!(q.percentile() > 0 && q.percentile() <= 100)) {
    return Bad("qat.percentile",
               absl::StrCat("must be in (0, 100] (got ", q.percentile(), ")"));
  }
  if (!(q.averaging_constant() > 0 && q.averaging_constant() <= 1)) {
    return Bad("qat.averaging_constant",
               absl::StrCat("must be in (0, 1] (got ", q.averaging_constant(),
                            ")"));
  }
  if (!(q.freeze_observers_after_epochs() >= 0 &&
        q.freeze_observers_after_epochs() <= q.epochs())) {
    return Bad("qat.freeze_observers_after_epochs",
               absl::StrCat("must be in [0, qat.epochs] = [0, ", q.epochs(),
                            "] (got ", q.freeze_observers_after_epochs(), ")"));
  }
  if (!(q.freeze_bn_after_epochs() >= 0 &&
        q.freeze_bn_after_epochs() <= q.epochs())) {
    return Bad("qat.freeze_bn_after_epochs",
               absl::StrCat("must be in [0, qat.epochs] = [0, ", q.epochs(),
                            "] (got ", q.freeze_bn_after_epochs(), ")"));
  }
  std::set<std::string> skipped;
  for (int i = 0; i < q.skip_layers_size(); ++i) {
    if (q.skip_layers(i).empty()) {
      return Bad(absl::StrCat("qat.skip_layers[", i, "]"), "must name a layer");
    }
    if (!skipped.insert(q.skip_layers(i)).second) {
      return Bad(absl::StrCat("qat.skip_layers[", i, "]"),
                 absl::StrCat("'", q.skip_layers(i), "' is listed twice"));
    }
  }
  if (q.teacher_guided() && !HasTeacher(c)) {
    return Bad("qat.teacher_guided",
               "needs a teacher: mode DISTILL, or QUANTIZE with a `teacher`");
  }
  return absl::OkStatus();
}
bool NonNegative(double v) { return v >= 0; }

absl::Status ValidateLoss(const JobConfig& config) {
  const auto& registry = losses::LossRegistry::Global();
  std::set<std::string> seen;
  for (int i = 0; i < config.loss_size(); ++i) {
    const auto& term = config.loss(i);
    const std::string path = absl::StrCat("loss[", i, "]");
    auto entry = registry.Find(term.name());
    if (!entry.ok()) {
      return Bad(path + ".name", std::string(entry.status().message()));
    }
    if (!seen.insert(term.name()).second) {
      return Bad(path + ".name",
                 absl::StrCat("'", term.name(), "' is listed twice"));
    }
    if (!(term.weight() >= 0) || !std::isfinite(term.weight())) {
      return Bad(path + ".weight",
                 absl::StrCat("must be >= 0 (got ", term.weight(), ")"));
    }
    if (term.has_weight_schedule()) {
      DISTILL_RETURN_IF_ERROR(ValidateValueSchedule(
          term.weight_schedule(), path + ".weight_schedule", &NonNegative,
          ">= 0"));
    }
    for (const auto& [name, value] : term.params()) {
      const losses::ParamSpec* spec = nullptr;
      std::vector<std::string> names;
      for (const auto& p : entry->params) {
        names.push_back(p.name);
        if (p.name == name) spec = &p;
      }
      if (spec == nullptr) {
        return Bad(path + ".params",
                   absl::StrCat("has '", name, "', which loss '", term.name(),
                                "' does not take; its parameters: ",
                                names.empty() ? "(none)"
                                              : absl::StrJoin(names, ", ")));
      }
      if (!(value >= spec->min_value && value <= spec->max_value)) {
        return Bad(absl::StrCat(path, ".params[", name, "]"),
                   absl::StrCat("must be in [", spec->min_value, ", ",
                                spec->max_value, "] (got ", value, ")"));
      }
    }
    if (entry->needs_teacher && !HasTeacher(config)) {
      return Bad(path + ".name",
                 absl::StrCat("'", term.name(),
                              "' needs a teacher, which only mode DISTILL has "
                              "(or QUANTIZE with a `teacher`)"));
    }
  }
  return absl::OkStatus();
}

// "host:port" with a non-empty host and a port in [1, 65535]; IPv6 hosts in
// brackets ("[::1]:5001").
bool IsHostPort(const std::string& endpoint) {
  const size_t colon = endpoint.rfind(':');
  if (colon == std::string::npos || colon == 0) return false;
  int port = 0;
  return absl::SimpleAtoi(endpoint.substr(colon + 1), &port) && port >= 1 &&
         port <= 65535;
}

absl::Status ValidateTeacher(const JobConfig& c) {
  const TeacherConfig& t = c.teacher();
  const bool remote = IsRemoteTeacher(t);
  if (!remote) {
    if (!t.has_model()) {
      return Bad("teacher", "needs `model` (run in this process) or "
                            "`endpoints`/`registry_dir` (teacher servers)");
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
    if (t.encoding() != TeacherConfig::ENCODING_UNSPECIFIED) {
      return Bad("teacher.encoding", remote_only);
    }
    if (t.top_k() != 0) return Bad("teacher.top_k", remote_only);
    if (!t.token_file().empty()) return Bad("teacher.token_file", remote_only);
    if (!t.tls_ca_file().empty()) {
      return Bad("teacher.tls_ca_file", remote_only);
    }
    if (t.has_cache() && t.cache().mode() != TeacherCacheConfig::NONE) {
      return Bad("teacher.cache.mode", remote_only);
    }
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
  if (t.encoding() == TeacherConfig::TOP_K && t.top_k() < 1) {
    return Bad("teacher.top_k",
               absl::StrCat("must be >= 1 with encoding TOP_K (got ", t.top_k(),
                            ")"));
  }
  if (t.encoding() != TeacherConfig::TOP_K && t.top_k() != 0) {
    return Bad("teacher.top_k", "applies to encoding TOP_K only");
  }
  if (t.prefetch_batches() < 0 || t.prefetch_batches() > 64) {
    return Bad("teacher.prefetch_batches",
               absl::StrCat("must be in [0, 64] (got ", t.prefetch_batches(),
                            ")"));
  }
  if (!(t.connect_timeout_seconds() > 0) ||
      !std::isfinite(t.connect_timeout_seconds())) {
    return Bad("teacher.connect_timeout_seconds",
               absl::StrCat("must be > 0 (got ", t.connect_timeout_seconds(),
                            ")"));
  }
  if (!(t.failover_grace_seconds() > 0) ||
      !std::isfinite(t.failover_grace_seconds())) {
    return Bad("teacher.failover_grace_seconds",
               absl::StrCat("must be > 0 (got ", t.failover_grace_seconds(),
                            ")"));
  }
  if (!(t.answer_timeout_seconds() > 0) ||
      !std::isfinite(t.answer_timeout_seconds())) {
    return Bad("teacher.answer_timeout_seconds",
               absl::StrCat("must be > 0 (got ", t.answer_timeout_seconds(),
                            ")"));
  }
  const TeacherCacheConfig& cache = t.cache();
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

// Resolves "a.b[2].c" to the line of that field in the parsed text.
int LineOf(const std::string& path, const Descriptor* descriptor,
           const TextFormat::ParseInfoTree* tree) {
  int line = -1;
  for (absl::string_view part : absl::StrSplit(path, '.')) {
    if (tree == nullptr || descriptor == nullptr) break;
    std::string name(part.substr(0, part.find('[')));
    int index = -1;
    if (part.find('[') != absl::string_view::npos) {
      int parsed = 0;
      absl::string_view inside =
          part.substr(part.find('[') + 1, part.size() - part.find('[') - 2);
      if (absl::SimpleAtoi(inside, &parsed)) index = parsed;
    }
    const FieldDescriptor* field = descriptor->FindFieldByName(name);
    if (field == nullptr) break;
    int at = field->is_repeated() ? std::max(index, 0) : -1;
    auto loc = tree->GetLocation(field, at);
    if (loc.line < 0) break;
    line = loc.line + 1;
    if (field->type() != FieldDescriptor::TYPE_MESSAGE || field->is_map()) break;
    tree = tree->GetTreeForNested(field, at);
    descriptor = field->message_type();
  }
  return line;
}

// Parses without applying defaults or validating.
absl::Status ParseText(const std::string& text, const std::string& source,
                       JobConfig& config, TextFormat::ParseInfoTree* tree) {
  Collector collector(source);
  TextFormat::Parser parser;
  parser.RecordErrorsTo(&collector);
  parser.WriteLocationsTo(tree);
  if (!parser.ParseFromString(text, &config)) {
    std::string message = collector.errors().empty()
                              ? absl::StrCat(source, ": cannot parse")
                              : collector.errors().front();
    return absl::InvalidArgumentError(message);
  }
  return absl::OkStatus();
}

}  // namespace

bool IsRemoteTeacher(const ::distill::v1::TeacherConfig& teacher) {
  return teacher.endpoints_size() > 0 || !teacher.registry_dir().empty();
}

void ApplyDefaults(JobConfig& c) {
  if (!c.has_temperature()) c.set_temperature(4.0);
  if (!c.has_epochs()) c.set_epochs(1);
  if (!c.has_batch_size()) c.set_batch_size(128);
  if (!c.has_eval_every_epochs()) c.set_eval_every_epochs(1);
  if (!c.has_checkpoint_every_epochs()) c.set_checkpoint_every_epochs(1);
  if (!c.has_keep_checkpoints()) c.set_keep_checkpoints(2);
  if (!c.has_log_every_steps()) c.set_log_every_steps(50);
  if (!c.has_micro_batches()) c.set_micro_batches(1);
  auto* dist = c.mutable_distributed();
  if (dist->backend().empty()) dist->set_backend("gloo");
  if (!dist->has_collective_timeout_seconds()) {
    dist->set_collective_timeout_seconds(300);
  }
  if (!dist->has_first_bucket_mb()) dist->set_first_bucket_mb(1);
  if (!dist->has_bucket_cap_mb()) dist->set_bucket_cap_mb(25);
  if (!dist->has_overlap()) dist->set_overlap(true);

  auto* data = c.mutable_data();
  if (data->dataset().empty()) data->set_dataset("fashion_mnist");
  if (data->dir().empty()) data->set_dir("/usr/share/datasets/fashion-mnist");
  if (!data->has_loader_queue_depth()) data->set_loader_queue_depth(4);
  auto* aug = data->mutable_augment();
  if (!aug->has_crop_padding()) aug->set_crop_padding(2);
  if (!aug->has_horizontal_flip()) aug->set_horizontal_flip(true);

  if (c.loss_size() == 0 && HasTeacher(c)) {
    auto* kd = c.add_loss();
    kd->set_name("kd_kl");
    kd->set_weight(0.9);
    auto* ce = c.add_loss();
    ce->set_name("hard_ce");
    ce->set_weight(0.1);
  } else if (c.loss_size() == 0) {
    c.add_loss()->set_name("hard_ce");
  }
  for (auto& term : *c.mutable_loss()) {
    if (!term.has_weight()) term.set_weight(1.0);
  }

  auto* opt = c.mutable_optimizer();
  if (opt->type() == OptimizerConfig::TYPE_UNSPECIFIED) {
    opt->set_type(OptimizerConfig::SGD);
  }
  const bool sgd = opt->type() == OptimizerConfig::SGD;
  if (!opt->has_lr()) opt->set_lr(sgd ? 0.1 : 0.001);
  if (!opt->has_momentum()) opt->set_momentum(0.9);
  if (!opt->has_weight_decay()) {
    opt->set_weight_decay(sgd ? 5e-4
                              : opt->type() == OptimizerConfig::ADAMW ? 0.01
                                                                      : 0.0);
  }
  if (!opt->has_beta1()) opt->set_beta1(0.9);
  if (!opt->has_beta2()) opt->set_beta2(0.999);
  if (!opt->has_eps()) opt->set_eps(1e-8);

  if (c.has_teacher()) {
    auto* t = c.mutable_teacher();
    if (!t->has_prefetch_batches()) t->set_prefetch_batches(4);
    if (!t->has_connect_timeout_seconds()) t->set_connect_timeout_seconds(10);
    if (!t->has_failover_grace_seconds()) t->set_failover_grace_seconds(30);
    if (!t->has_answer_timeout_seconds()) t->set_answer_timeout_seconds(60);
    if (IsRemoteTeacher(*t) &&
        t->encoding() == TeacherConfig::ENCODING_UNSPECIFIED) {
      t->set_encoding(TeacherConfig::DENSE_FP32);
    }
    if (t->has_cache() &&
        t->cache().mode() == TeacherCacheConfig::MODE_UNSPECIFIED) {
      t->mutable_cache()->set_mode(TeacherCacheConfig::NONE);
    }
  }
  if (c.has_qat()) {
    auto* q = c.mutable_qat();
    if (!q->has_calibration_batches()) q->set_calibration_batches(32);
    if (!q->has_epochs()) q->set_epochs(1);
    if (!q->has_lr()) q->set_lr(opt->lr() / 10);
    if (q->observer() == v1::QatConfig::OBSERVER_UNSPECIFIED) {
      q->set_observer(v1::QatConfig::MINMAX);
    }
    if (!q->has_percentile()) q->set_percentile(99.99);
    if (!q->has_averaging_constant()) q->set_averaging_constant(0.01);
    if (!q->has_freeze_observers_after_epochs()) {
      q->set_freeze_observers_after_epochs(0.75 * q->epochs());
    }
    if (!q->has_freeze_bn_after_epochs()) {
      q->set_freeze_bn_after_epochs(0.5 * q->epochs());
    }
    if (!q->has_teacher_guided()) q->set_teacher_guided(HasTeacher(c));
  }

  auto* s = c.mutable_lr_schedule();
  if (s->type() == ScheduleConfig::TYPE_UNSPECIFIED) {
    s->set_type(ScheduleConfig::CONSTANT);
  }
  if (!s->has_step_epochs()) s->set_step_epochs(1);
  if (!s->has_gamma()) s->set_gamma(0.1);
}

absl::Status ValidateJobConfig(const JobConfig& c) {
  if (c.mode() == JobConfig::MODE_UNSPECIFIED) {
    return Bad("mode", "is required: TRAIN, DISTILL, EVALUATE or QUANTIZE");
  }
  if (c.run_dir().empty()) {
    return Bad("run_dir", "is required (in the config or as --run_dir)");
  }
  if (c.data().dataset() != "fashion_mnist") {
    return Bad("data.dataset", absl::StrCat("'", c.data().dataset(),
                                            "' is not known; known: "
                                            "fashion_mnist"));
  }
  if (c.data().train_limit() < 0) {
    return Bad("data.train_limit", "must be >= 0 (0 uses all samples)");
  }
  if (c.data().test_limit() < 0) {
    return Bad("data.test_limit", "must be >= 0 (0 uses all samples)");
  }
  if (c.data().loader_queue_depth() < 1) {
    return Bad("data.loader_queue_depth",
               absl::StrCat("must be >= 1 (got ", c.data().loader_queue_depth(),
                            ")"));
  }
  const int pad = c.data().augment().crop_padding();
  if (pad < 0 || pad > 8) {
    return Bad("data.augment.crop_padding",
               absl::StrCat("must be in [0, 8] (got ", pad, ")"));
  }
  if (!c.has_student()) {
    return Bad("student", "is required");
  }
  DISTILL_RETURN_IF_ERROR(ValidateModel(c.student(), "student", false));
  if (c.mode() == JobConfig::DISTILL) {
    if (!c.has_teacher()) return Bad("teacher", "is required in mode DISTILL");
    DISTILL_RETURN_IF_ERROR(ValidateTeacher(c));
  } else if (c.mode() == JobConfig::QUANTIZE && c.has_teacher()) {
    DISTILL_RETURN_IF_ERROR(ValidateTeacher(c));
  } else if (c.has_teacher()) {
    return Bad("teacher", "is only used in modes DISTILL and QUANTIZE");
  }
  if (c.mode() == JobConfig::QUANTIZE && c.student().has_arch() &&
      c.student().weights().empty()) {
    return Bad("student.weights",
               "is required in mode QUANTIZE: the trained student to quantize");
  }
  if (c.mode() == JobConfig::EVALUATE && c.student().has_arch() &&
      c.student().weights().empty()) {
    return Bad("student.weights", "is required in mode EVALUATE");
  }
  if (!(c.temperature() > 0) || !std::isfinite(c.temperature())) {
    return Bad("temperature",
               absl::StrCat("must be > 0 (got ", c.temperature(), ")"));
  }
  if (c.has_temperature_schedule()) {
    DISTILL_RETURN_IF_ERROR(ValidateValueSchedule(
        c.temperature_schedule(), "temperature_schedule", &Positive, "> 0"));
  }
  DISTILL_RETURN_IF_ERROR(ValidateLoss(c));
  DISTILL_RETURN_IF_ERROR(ValidateQat(c));
  DISTILL_RETURN_IF_ERROR(ValidateOptimizer(c.optimizer()));
  DISTILL_RETURN_IF_ERROR(ValidateSchedule(c.lr_schedule(), c.optimizer().lr()));
  if (c.epochs() < 1) {
    return Bad("epochs", absl::StrCat("must be >= 1 (got ", c.epochs(), ")"));
  }
  if (c.batch_size() < 1) {
    return Bad("batch_size",
               absl::StrCat("must be >= 1 (got ", c.batch_size(), ")"));
  }
  if (!(c.grad_clip_norm() >= 0)) {
    return Bad("grad_clip_norm",
               absl::StrCat("must be >= 0 (got ", c.grad_clip_norm(), ")"));
  }
  if (c.threads() < 0) {
    return Bad("threads", absl::StrCat("must be >= 0 (got ", c.threads(), ")"));
  }
  if (c.eval_every_epochs() < 1) {
    return Bad("eval_every_epochs",
               absl::StrCat("must be >= 1 (got ", c.eval_every_epochs(), ")"));
  }
  if (c.checkpoint_every_epochs() < 0) {
    return Bad("checkpoint_every_epochs",
               absl::StrCat("must be >= 0 (got ", c.checkpoint_every_epochs(),
                            ")"));
  }
  if (c.checkpoint_every_steps() < 0) {
    return Bad("checkpoint_every_steps",
               absl::StrCat("must be >= 0 (got ", c.checkpoint_every_steps(),
                            ")"));
  }
  if (c.keep_checkpoints() < 1) {
    return Bad("keep_checkpoints",
               absl::StrCat("must be >= 1 (got ", c.keep_checkpoints(), ")"));
  }
  if (c.micro_batches() < 1) {
    return Bad("micro_batches",
               absl::StrCat("must be >= 1 (got ", c.micro_batches(), ")"));
  }
  if (c.micro_batches() > c.batch_size()) {
    return Bad("micro_batches",
               absl::StrCat("must be <= batch_size (got ", c.micro_batches(),
                            " for batch_size ", c.batch_size(), ")"));
  }
  const auto& dist = c.distributed();
  if (dist.backend() != "gloo" && dist.backend() != "nccl") {
    return Bad("distributed.backend",
               absl::StrCat("'", dist.backend(),
                            "' is not known; known: gloo (CPU), nccl (CUDA)"));
  }
  if (!(dist.collective_timeout_seconds() > 0)) {
    return Bad("distributed.collective_timeout_seconds",
               absl::StrCat("must be > 0 (got ",
                            dist.collective_timeout_seconds(), ")"));
  }
  if (!(dist.first_bucket_mb() > 0)) {
    return Bad("distributed.first_bucket_mb",
               absl::StrCat("must be > 0 (got ", dist.first_bucket_mb(), ")"));
  }
  if (!(dist.bucket_cap_mb() > 0)) {
    return Bad("distributed.bucket_cap_mb",
               absl::StrCat("must be > 0 (got ", dist.bucket_cap_mb(), ")"));
  }
  if (c.log_every_steps() < 1) {
    return Bad("log_every_steps",
               absl::StrCat("must be >= 1 (got ", c.log_every_steps(), ")"));
  }
  return absl::OkStatus();
}

absl::StatusOr<JobConfig> ParseJobConfig(const std::string& text,
                                         const std::string& source,
                                         const std::string& run_dir) {
  JobConfig config;
  TextFormat::ParseInfoTree tree;
  DISTILL_RETURN_IF_ERROR(ParseText(text, source, config, &tree));
  if (!run_dir.empty()) config.set_run_dir(run_dir);
  ApplyDefaults(config);
  absl::Status valid = ValidateJobConfig(config);
  if (!valid.ok()) {
    std::string message(valid.message());
    std::string path = message.substr(0, message.find(' '));
    int line = LineOf(path, JobConfig::descriptor(), &tree);
    return absl::InvalidArgumentError(
        line > 0 ? absl::StrCat(source, ":", line, ": ", message)
                 : absl::StrCat(source, ": ", message));
  }
  return config;
}

absl::StatusOr<std::string> ReadConfigFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) {
    return absl::NotFoundError(absl::StrCat("config file not found: ", path));
  }
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

absl::StatusOr<JobConfig> LoadJobConfig(const std::string& path,
                                        const std::string& run_dir) {
  DISTILL_ASSIGN_OR_RETURN(std::string text, ReadConfigFile(path));
  return ParseJobConfig(text, path, run_dir);
}

absl::StatusOr<std::vector<std::string>> ConfigPlugins(
    const std::string& text, const std::string& source) {
  JobConfig config;
  TextFormat::ParseInfoTree tree;
  DISTILL_RETURN_IF_ERROR(ParseText(text, source, config, &tree));
  return std::vector<std::string>(config.plugins().begin(),
                                  config.plugins().end());
}

}  // namespace distill::trainer
