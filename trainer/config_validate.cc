// ValidateJobConfig: every value of a config with its defaults applied,
// checked in a fixed order so the first problem is the one reported.
#include <set>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status.h"
#include "losses/registry.h"
#include "student/zoo.h"
#include "trainer/config.h"
#include "trainer/internal/config_checks.h"

namespace distill::trainer {
namespace {

// Gradient buckets up to 1 TiB: larger ones overflow the byte count.
Range BucketRange() { return Range::OpenClosed(0, 1 << 20); }

using ::distill::v1::ModelConfig;
using ::distill::v1::OptimizerConfig;
using ::distill::v1::ScheduleConfig;
using ::distill::v1::TeacherCacheConfig;
using ::distill::v1::TeacherConfig;

}  // namespace

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
          return Bad(
              path + ".options",
              absl::StrCat("has '", name, "', which model '", model.arch(),
                           "' does not take; its options: ",
                           absl::StrJoin(opt_names, ", ")));
        }
        DISTILL_RETURN_IF_ERROR(
            CheckRange(absl::StrCat(path, ".options[", name, "]"), value,
                       Range::Closed(opt->min_value, opt->max_value)));
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

namespace {

absl::Status ValidateOptimizer(const OptimizerConfig& opt) {
  DISTILL_RETURN_IF_ERROR(
      CheckRange("optimizer.lr", opt.lr(), Range::Above(0).Finite()));
  DISTILL_RETURN_IF_ERROR(CheckRange("optimizer.weight_decay",
                                     opt.weight_decay(),
                                     Range::AtLeast(0).Finite()));
  DISTILL_RETURN_IF_ERROR(CheckRange("optimizer.momentum", opt.momentum(),
                                     Range::ClosedOpen(0, 1)));
  if (opt.nesterov() && opt.momentum() == 0) {
    return Bad("optimizer.nesterov", "needs optimizer.momentum > 0");
  }
  DISTILL_RETURN_IF_ERROR(
      CheckRange("optimizer.beta1", opt.beta1(), Range::ClosedOpen(0, 1)));
  DISTILL_RETURN_IF_ERROR(
      CheckRange("optimizer.beta2", opt.beta2(), Range::ClosedOpen(0, 1)));
  return CheckRange("optimizer.eps", opt.eps(), Range::Above(0).Finite());
}

absl::Status ValidateSchedule(const ScheduleConfig& s, double lr) {
  DISTILL_RETURN_IF_ERROR(CheckRange("lr_schedule.warmup_steps",
                                     s.warmup_steps(), Range::AtLeast(0)));
  DISTILL_RETURN_IF_ERROR(CheckRange("lr_schedule.step_epochs", s.step_epochs(),
                                     Range::AtLeast(1)));
  DISTILL_RETURN_IF_ERROR(
      CheckRange("lr_schedule.gamma", s.gamma(), Range::OpenClosed(0, 1)));
  return CheckRange("lr_schedule.min_lr", s.min_lr(),
                    Range::Closed(0, lr).Described("in [0, optimizer.lr]"));
}

// A schedule's type is required and its values must lie in `range`.
absl::Status ValidateValueSchedule(const v1::ValueSchedule& s,
                                   const std::string& path,
                                   const Range& range) {
  if (s.type() == v1::ValueSchedule::TYPE_UNSPECIFIED) {
    return Bad(path + ".type", "is required: CONSTANT, LINEAR or COSINE");
  }
  DISTILL_RETURN_IF_ERROR(CheckRange(path + ".start", s.start(), range));
  if (s.type() == v1::ValueSchedule::CONSTANT) return absl::OkStatus();
  return CheckRange(path + ".end", s.end(), range);
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
               "supports zoo students only (student.arch: cnn_student, "
               "cnn_teacher, mlp or gpt): a TorchScript student's layers "
               "cannot be rewritten for quantization here");
  }
  const auto& q = c.qat();
  DISTILL_RETURN_IF_ERROR(CheckRange(
      "qat.calibration_batches", q.calibration_batches(), Range::AtLeast(1)));
  DISTILL_RETURN_IF_ERROR(CheckRange("qat.epochs", q.epochs(),
                                     Range::AtLeast(0).Noted("(0: PTQ only)")));
  DISTILL_RETURN_IF_ERROR(
      CheckRange("qat.lr", q.lr(), Range::Above(0).Finite()));
  DISTILL_RETURN_IF_ERROR(
      CheckRange("qat.percentile", q.percentile(), Range::OpenClosed(0, 100)));
  DISTILL_RETURN_IF_ERROR(CheckRange("qat.averaging_constant",
                                     q.averaging_constant(),
                                     Range::OpenClosed(0, 1)));
  const Range fine_tuning =
      Range::Closed(0, q.epochs())
          .Described(
              absl::StrCat("in [0, qat.epochs] = [0, ", q.epochs(), "]"));
  DISTILL_RETURN_IF_ERROR(CheckRange("qat.freeze_observers_after_epochs",
                                     q.freeze_observers_after_epochs(),
                                     fine_tuning));
  DISTILL_RETURN_IF_ERROR(CheckRange("qat.freeze_bn_after_epochs",
                                     q.freeze_bn_after_epochs(), fine_tuning));
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
  if (q.group_size() != 32 && q.group_size() != 64 && q.group_size() != 128) {
    return Bad("qat.group_size",
               absl::StrCat("must be 32, 64 or 128, not ", q.group_size()));
  }
  DISTILL_RETURN_IF_ERROR(
      CheckRange("qat.awq_rows", q.awq_rows(), Range::AtLeast(16)));
  if (q.teacher_guided() && !HasTeacher(c)) {
    return Bad("qat.teacher_guided",
               "needs a teacher: mode DISTILL, or QUANTIZE with a `teacher`");
  }
  return absl::OkStatus();
}

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
    DISTILL_RETURN_IF_ERROR(CheckRange(path + ".weight", term.weight(),
                                       Range::AtLeast(0).Finite()));
    if (term.has_weight_schedule()) {
      DISTILL_RETURN_IF_ERROR(ValidateValueSchedule(
          term.weight_schedule(), path + ".weight_schedule",
          Range::AtLeast(0).Finite()));
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
                   absl::StrCat(
                       "has '", name, "', which loss '", term.name(),
                       "' does not take; its parameters: ",
                       names.empty() ? "(none)" : absl::StrJoin(names, ", ")));
      }
      DISTILL_RETURN_IF_ERROR(
          CheckRange(absl::StrCat(path, ".params[", name, "]"), value,
                     Range::Closed(spec->min_value, spec->max_value)));
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

// on_policy: a zoo language model sampling from windows a teacher then
// scores (not a target store: it holds targets for the data's windows
// only).
absl::Status ValidateOnPolicy(const JobConfig& c) {
  if (!c.has_on_policy()) return absl::OkStatus();
  const auto& o = c.on_policy();
  if (c.mode() != JobConfig::DISTILL) {
    return Bad("on_policy", "applies to mode DISTILL only");
  }
  if (c.data().dataset() != "tokens" || c.student().arch() != "gpt") {
    return Bad("on_policy",
               "needs a language model: data.dataset \"tokens\" and a zoo "
               "\"gpt\" student (it samples through the model's KV cache)");
  }
  if (!c.teacher().store_dir().empty()) {
    return Bad("on_policy",
               "needs a teacher in process or on servers: a target store "
               "holds targets for the data's own windows only");
  }
  DISTILL_RETURN_IF_ERROR(
      CheckRange("on_policy.fraction", o.fraction(), Range::Closed(0, 1)));
  DISTILL_RETURN_IF_ERROR(
      CheckRange("on_policy.prompt_tokens", o.prompt_tokens(),
                 Range::Closed(1, static_cast<double>(c.data().seq_len() - 1))
                     .Noted("(data.seq_len - 1 at most)")));
  const int64_t room = c.data().seq_len() + 1 - o.prompt_tokens();
  DISTILL_RETURN_IF_ERROR(CheckRange(
      "on_policy.new_tokens", o.new_tokens(),
      Range::Closed(1, static_cast<double>(room))
          .Noted("(data.seq_len + 1 - on_policy.prompt_tokens at most)")));
  DISTILL_RETURN_IF_ERROR(CheckRange("on_policy.temperature", o.temperature(),
                                     Range::AtLeast(0).Finite()));
  DISTILL_RETURN_IF_ERROR(
      CheckRange("on_policy.top_p", o.top_p(), Range::OpenClosed(0, 1)));
  DISTILL_RETURN_IF_ERROR(
      CheckRange("on_policy.stop_id", o.stop_id(), Range::AtLeast(-1)));
  DISTILL_RETURN_IF_ERROR(CheckRange("on_policy.student_top_k",
                                     o.student_top_k(), Range::AtLeast(0)));
  for (const auto& term : c.loss()) {
    if (o.student_top_k() > 0 &&
        (term.name() == "dkd" || term.name() == "mse_logits")) {
      return Bad("on_policy.student_top_k",
                 absl::StrCat("gives the teacher's probabilities at the "
                              "student's ids only, and loss ",
                              term.name(), " needs all of them (dense)"));
    }
  }
  if (o.overlap() && !IsRemoteTeacher(c.teacher())) {
    return Bad("on_policy.overlap",
               "needs teacher servers: an in-process teacher scores on the "
               "trainer's own thread, so there is nothing to overlap");
  }
  bool scored = false;
  for (const auto& term : c.loss()) {
    const auto entry = losses::LossRegistry::Global().Find(term.name());
    if (entry.ok() && entry->needs_teacher &&
        (term.weight() > 0 || term.has_weight_schedule())) {
      scored = true;
    }
  }
  if (!scored) {
    return Bad("on_policy",
               "needs a loss term that reads the teacher (on-policy steps "
               "train on those terms only)");
  }
  return absl::OkStatus();
}

// data.dataset "tokens": windows for a language model.
absl::Status ValidateTokenData(const JobConfig& c) {
  const auto& d = c.data();
  if (d.dir().empty()) {
    return Bad("data.dir",
               "is required for data.dataset \"tokens\": a folder written by "
               "distill_prepare_text");
  }
  DISTILL_RETURN_IF_ERROR(
      CheckRange("data.seq_len", d.seq_len(), Range::AtLeast(1)));
  DISTILL_RETURN_IF_ERROR(
      CheckRange("data.stride", d.stride(), Range::AtLeast(1)));
  if (d.augment().enabled()) {
    return Bad("data.augment.enabled",
               "applies to images; token windows are not augmented");
  }
  if (c.has_teacher() && IsRemoteTeacher(c.teacher()) &&
      (c.teacher().cache().mode() == TeacherCacheConfig::MEMORY ||
       c.teacher().cache().mode() == TeacherCacheConfig::DISK)) {
    return Bad("teacher.cache.mode",
               "caches per-sample targets of image jobs; a language model's "
               "[S, V] targets per window are not cached yet (mode NONE)");
  }
  return absl::OkStatus();
}

// data, student and teacher: what the job reads and learns from.
absl::Status ValidateInputs(const JobConfig& c) {
  const bool tokens = c.data().dataset() == "tokens";
  if (c.data().dataset() != "fashion_mnist" && !tokens) {
    return Bad("data.dataset", absl::StrCat("'", c.data().dataset(),
                                            "' is not known; known: "
                                            "fashion_mnist, tokens"));
  }
  if (tokens) {
    DISTILL_RETURN_IF_ERROR(ValidateTokenData(c));
  } else if (c.data().has_seq_len() || c.data().has_stride()) {
    return Bad(c.data().has_seq_len() ? "data.seq_len" : "data.stride",
               "applies to data.dataset \"tokens\" only");
  }
  if (c.data().train_limit() < 0) {
    return Bad("data.train_limit", "must be >= 0 (0 uses all samples)");
  }
  if (c.data().test_limit() < 0) {
    return Bad("data.test_limit", "must be >= 0 (0 uses all samples)");
  }
  DISTILL_RETURN_IF_ERROR(CheckRange("data.loader_queue_depth",
                                     c.data().loader_queue_depth(),
                                     Range::AtLeast(1)));
  DISTILL_RETURN_IF_ERROR(CheckRange("data.augment.crop_padding",
                                     c.data().augment().crop_padding(),
                                     Range::Closed(0, 8)));
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
  return absl::OkStatus();
}

// The loop's numbers: epochs, batches, checkpoints, ranks and logging.
absl::Status ValidateRun(const JobConfig& c) {
  DISTILL_RETURN_IF_ERROR(
      CheckRange("epochs", c.epochs(), Range::Closed(1, kMaxEpochs)));
  DISTILL_RETURN_IF_ERROR(
      CheckRange("batch_size", c.batch_size(), Range::AtLeast(1)));
  DISTILL_RETURN_IF_ERROR(
      CheckRange("grad_clip_norm", c.grad_clip_norm(),
                 Range::AtLeast(0).Finite().Noted("(0: no clipping)")));
  DISTILL_RETURN_IF_ERROR(
      CheckRange("threads", c.threads(), Range::AtLeast(0)));
  DISTILL_RETURN_IF_ERROR(CheckRange("eval_every_epochs", c.eval_every_epochs(),
                                     Range::AtLeast(1)));
  DISTILL_RETURN_IF_ERROR(CheckRange("checkpoint_every_epochs",
                                     c.checkpoint_every_epochs(),
                                     Range::AtLeast(0)));
  DISTILL_RETURN_IF_ERROR(CheckRange(
      "checkpoint_every_steps", c.checkpoint_every_steps(), Range::AtLeast(0)));
  DISTILL_RETURN_IF_ERROR(
      CheckRange("keep_checkpoints", c.keep_checkpoints(), Range::AtLeast(1)));
  DISTILL_RETURN_IF_ERROR(
      CheckRange("micro_batches", c.micro_batches(), Range::AtLeast(1)));
  DISTILL_RETURN_IF_ERROR(CheckRange("loss_chunk_tokens", c.loss_chunk_tokens(),
                                     Range::AtLeast(1)));
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
  DISTILL_RETURN_IF_ERROR(CheckRange("distributed.collective_timeout_seconds",
                                     dist.collective_timeout_seconds(),
                                     SecondsRange()));
  DISTILL_RETURN_IF_ERROR(CheckRange("distributed.first_bucket_mb",
                                     dist.first_bucket_mb(), BucketRange()));
  DISTILL_RETURN_IF_ERROR(CheckRange("distributed.bucket_cap_mb",
                                     dist.bucket_cap_mb(), BucketRange()));
  return CheckRange("log_every_steps", c.log_every_steps(), Range::AtLeast(1));
}

}  // namespace

absl::Status ValidateJobConfig(const JobConfig& c) {
  if (c.mode() == JobConfig::MODE_UNSPECIFIED) {
    return Bad("mode", "is required: TRAIN, DISTILL, EVALUATE or QUANTIZE");
  }
  if (c.run_dir().empty()) {
    return Bad("run_dir", "is required (in the config or as --run_dir)");
  }
  DISTILL_RETURN_IF_ERROR(ValidateInputs(c));
  DISTILL_RETURN_IF_ERROR(
      CheckRange("temperature", c.temperature(), TemperatureRange()));
  if (c.has_temperature_schedule()) {
    DISTILL_RETURN_IF_ERROR(ValidateValueSchedule(
        c.temperature_schedule(), "temperature_schedule", TemperatureRange()));
  }
  DISTILL_RETURN_IF_ERROR(ValidateLoss(c));
  DISTILL_RETURN_IF_ERROR(ValidateQat(c));
  DISTILL_RETURN_IF_ERROR(ValidateOnPolicy(c));
  DISTILL_RETURN_IF_ERROR(ValidateOptimizer(c.optimizer()));
  DISTILL_RETURN_IF_ERROR(
      ValidateSchedule(c.lr_schedule(), c.optimizer().lr()));
  return ValidateRun(c);
}

}  // namespace distill::trainer
