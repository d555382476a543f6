#include "trainer/internal/training_run.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <optional>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/status.h"
#include "losses/schedule.h"
#include "trainer/internal/evaluate.h"
#include "trainer/internal/lm_text.h"
#include "trainer/internal/lr_schedule.h"
#include "trainer/teacher/teacher_prefetch.h"

namespace distill::trainer {
namespace {

// Images of the test set per forward in evaluations.
constexpr int64_t kEvalBatch = 512;

bool IsTokenJob(const Job& job) {
  return job.config.data().dataset() == "tokens";
}

std::string TermsString(const std::map<std::string, double>& terms) {
  std::string out;
  for (const auto& [name, value] : terms) {
    absl::StrAppendFormat(&out, "%s%s %.4f", out.empty() ? "" : " ", name,
                          value);
  }
  return out;
}

}  // namespace

absl::StatusOr<EvalResult> EvaluateSplit(Job& job, const data::Dataset& split,
                                         bool restore_train) {
  if (!IsTokenJob(job)) {
    return Evaluate(*job.model, split, kEvalBatch, restore_train);
  }
  return EvaluateLanguageModel(
      *job.model, split, LmEvalWindows(job.config.data().seq_len()),
      job.config.loss_chunk_tokens(),
      job.teacher ? job.teacher->any_input_teacher() : nullptr, restore_train);
}

nlohmann::json BaseSummary(const Job& job) {
  const auto& c = job.config;
  nlohmann::json s = {
      {"name", c.name()},
      {"mode", JobConfig::Mode_Name(c.mode())},
      {"model", job.model->description()},
      {"params", job.model->num_parameters()},
      {"epochs", c.epochs()},
      {"batch_size", c.batch_size()},
      {"seed", c.seed()},
  };
  if (job.teacher) s["teacher"] = job.teacher->description();
  if (c.mode() == JobConfig::DISTILL) s["temperature"] = c.temperature();
  return s;
}

TrainingRun::TrainingRun(Job& job, const RunOptions& options)
    : job_(job),
      options_(options),
      leader_(job.comm->rank() == 0),
      verbose_(options.verbose && leader_) {}

absl::Status TrainingRun::Open() {
  if (!leader_) return absl::OkStatus();
  return metrics_.Open(job_.config.run_dir());
}

absl::StatusOr<TrainPosition> TrainingRun::Resume() {
  const std::string& run_dir = job_.config.run_dir();
  TrainPosition position;
  if (options_.resume) {
    DISTILL_ASSIGN_OR_RETURN(
        ResumePoint point,
        LoadNewestCheckpoint(run_dir, *job_.model, *job_.optimizer));
    // Always said, quiet or not: the run loses the steps after the one it
    // resumes from.
    if (leader_) {
      for (const std::string& skipped : point.skipped) {
        std::fprintf(stderr, "distill: skipped %s\n", skipped.c_str());
      }
    }
    position = point.position;
    if (!point.path.empty() && verbose_) {
      std::printf("resuming from %s (epoch %lld, step %lld)\n",
                  point.path.c_str(),
                  static_cast<long long>(position.epoch + 1),
                  static_cast<long long>(position.global_step));
    } else if (point.path.empty() && verbose_) {
      std::printf("no checkpoint in %s; starting from the beginning\n",
                  run_dir.c_str());
    }
  }
  const int world = job_.comm->world_size();
  if (position.cursor % world != 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "the checkpoint stopped after ", position.cursor,
        " samples of its epoch, which does not split across ", world,
        " ranks; resume with a number of ranks that divides it"));
  }
  return position;
}

absl::Status TrainingRun::BroadcastInitialWeights() {
  auto state = job_.model->named_parameters();
  for (auto& b : job_.model->named_buffers()) state.push_back(b);
  return job_.grad_sync->BroadcastFromRankZero(state,
                                               "broadcast of initial weights");
}

void TrainingRun::PrintStart() const {
  if (!verbose_) return;
  const JobConfig& c = job_.config;
  const int world = job_.comm->world_size();
  std::printf(
      "%s: %s, %lld parameters, %lld training samples, %s%d epochs%s\n",
      JobConfig::Mode_Name(c.mode()).c_str(), job_.model->description().c_str(),
      static_cast<long long>(job_.model->num_parameters()),
      static_cast<long long>(job_.train->size()),
      job_.teacher ? ("teacher " + job_.teacher->description() + ", ").c_str()
                   : "",
      c.epochs(),
      world > 1
          ? absl::StrFormat(", %d ranks (%s, %d gradient buckets)", world,
                            job_.comm->backend(), job_.grad_sync->num_buckets())
                .c_str()
          : "");
  std::fflush(stdout);
}

LoopParts TrainingRun::Parts() const {
  LoopParts parts;
  student::Model* model = job_.model.get();
  parts.step.forward = [model](const torch::Tensor& x) {
    return model->forward(x);
  };
  if (student::ZooModule* zoo = model->zoo_module();
      zoo != nullptr && zoo->is_language_model()) {
    parts.step.hidden = [zoo](const torch::Tensor& tokens) {
      return zoo->Hidden(tokens, nullptr);
    };
    parts.step.head_weight = [zoo] { return zoo->HeadWeight(); };
  }
  parts.step.parameters = model->parameters();
  parts.step.optimizer = job_.optimizer.get();
  parts.step.loss = &*job_.loss;
  if (job_.on_policy_loss) parts.step.on_policy_loss = &*job_.on_policy_loss;
  parts.on_policy = job_.on_policy.get();
  parts.step.grad_sync = job_.grad_sync.get();
  parts.train = job_.train.get();
  parts.teacher = job_.teacher.get();
  parts.comm = job_.comm.get();
  parts.buffers = model->named_buffers();
  return parts;
}

LoopSettings TrainingRun::Settings() const {
  const JobConfig& c = job_.config;
  LoopSettings settings;
  settings.config = &job_.config;
  settings.step.micro_batches = c.micro_batches();
  settings.step.grad_clip_norm = c.grad_clip_norm();
  settings.step.chunk_tokens = c.loss_chunk_tokens();
  settings.epochs = c.epochs();
  settings.sampler_seed = c.seed();
  settings.prefetch_batches = c.teacher().prefetch_batches();
  settings.lr_at = [&c](int64_t step, const EpochPlan& plan) {
    return LearningRate(c.lr_schedule(), c.optimizer().lr(), step,
                        plan.steps_per_epoch, plan.total_steps);
  };
  std::optional<losses::ValueSchedule> schedule;
  if (c.has_temperature_schedule()) {
    schedule = ScheduleFromProto(c.temperature_schedule());
  }
  settings.temperature_at = [&c, schedule](int64_t step,
                                           const EpochPlan& plan) {
    return schedule ? schedule->At(step, plan.total_steps) : c.temperature();
  };
  const int rank = job_.comm->rank();
  settings.diverged = [rank](double loss, int64_t step) {
    return absl::InternalError(absl::StrCat(
        "rank ", rank, ": loss became ", loss, " at step ", step + 1,
        " (lower optimizer.lr or set grad_clip_norm); the last checkpoint "
        "is kept"));
  };
  return settings;
}

LoopHooks TrainingRun::Hooks() {
  LoopHooks hooks;
  hooks.after_step = [this](const StepReport& r) { return AfterStep(r); };
  hooks.close_epoch = [this](const EpochReport& r) { return CloseEpoch(r); };
  hooks.teacher_failed = [this](const TrainPosition& at) {
    return Checkpoint(at);
  };
  return hooks;
}

absl::StatusOr<std::string> TrainingRun::Checkpoint(
    const TrainPosition& position) {
  if (!leader_) return std::string();
  const JobConfig& c = job_.config;
  return SaveCheckpoint(c.run_dir(), *job_.model, *job_.optimizer, position,
                        c.keep_checkpoints());
}

absl::StatusOr<bool> TrainingRun::AgreeToStop(int64_t global_step) {
  const bool limit =
      options_.stop_after_steps > 0 && global_step >= options_.stop_after_steps;
  const bool signalled = options_.should_stop && options_.should_stop();
  if (job_.comm->world_size() == 1) return limit || signalled;
  DISTILL_ASSIGN_OR_RETURN(
      const bool any,
      job_.comm->AnyRank(signalled,
                         absl::StrCat("stop agreement at step ", global_step)));
  return limit || any;
}

absl::StatusOr<bool> TrainingRun::AfterStep(const StepReport& r) {
  const JobConfig& c = job_.config;
  const EpochPlan& plan = *r.plan;
  const int64_t step = r.position.global_step;
  if (leader_ && (step % c.log_every_steps() == 0 ||
                  r.step_in_epoch == plan.steps_per_epoch)) {
    const int world = job_.comm->world_size();
    const double rate =
        world * r.epoch_samples / std::max(r.epoch_seconds, 1e-9);
    const double eta = (plan.total_steps - step) * c.batch_size() / rate;
    const nlohmann::json teacher_stats = r.take_teacher_stats();
    // Token data: each sample is seq_len positions.
    const int64_t per_sample = IsTokenJob(job_) ? c.data().seq_len() : 1;
    if (verbose_) {
      std::printf(
          "epoch %lld/%d step %lld/%lld loss %.4f [%s] lr %.4g %.0f %s/s "
          "ETA %s%s\n",
          static_cast<long long>(r.position.epoch + 1), c.epochs(),
          static_cast<long long>(r.step_in_epoch),
          static_cast<long long>(plan.steps_per_epoch), r.loss,
          TermsString(r.terms).c_str(), r.lr, rate * per_sample,
          per_sample > 1 ? "tokens" : "samples", FormatDuration(eta).c_str(),
          TeacherProgress(teacher_stats).c_str());
      std::fflush(stdout);
    }
    nlohmann::json record = {{"type", "train"}, {"epoch", r.position.epoch + 1},
                             {"step", step},    {"loss", r.loss},
                             {"lr", r.lr},      {"samples_per_sec", rate}};
    if (per_sample > 1) record["tokens_per_sec"] = rate * per_sample;
    record["terms"] = r.terms;
    record.update(teacher_stats);
    DISTILL_RETURN_IF_ERROR(metrics_.Write(record));
  }
  DISTILL_ASSIGN_OR_RETURN(const bool stop, AgreeToStop(step));
  if (stop || (c.checkpoint_every_steps() > 0 &&
               step % c.checkpoint_every_steps() == 0)) {
    DISTILL_ASSIGN_OR_RETURN(last_checkpoint_, Checkpoint(r.position));
  }
  return stop;
}

absl::Status TrainingRun::CloseEpoch(const EpochReport& r) {
  const JobConfig& c = job_.config;
  const int world = job_.comm->world_size();
  train_seconds_ += r.seconds;
  trained_samples_ += r.samples * world;
  last_epoch_terms_ = r.MeanTerms();
  if (!leader_) return absl::OkStatus();

  const int64_t done = r.epoch + 1;
  const bool last = done == c.epochs();
  nlohmann::json record = {
      {"type", "epoch"},
      {"epoch", done},
      {"step", r.position.global_step},
      {"train_loss", r.loss_sum / std::max<int64_t>(r.samples, 1)},
      {"terms", last_epoch_terms_},
      {"epoch_seconds", r.seconds},
      {"profile_seconds", r.profile.ToJson()},
      {"on_policy_steps", r.on_policy_steps},
      {"samples_per_sec", world * r.samples / std::max(r.seconds, 1e-9)}};
  record.update(r.teacher_stats);
  if ((last || done % c.eval_every_epochs() == 0) && IsTokenJob(job_)) {
    // Language models: validation after each epoch, test at the end.
    DISTILL_ASSIGN_OR_RETURN(EvalResult eval,
                             EvaluateSplit(job_, *job_.valid, true));
    last_eval_ = eval.ToJson("validation");
    record.update(last_eval_);
    if (verbose_) {
      std::printf(
          "epoch %lld/%d done in %s: validation perplexity %.2f, next-token "
          "accuracy %.2f%%%s\n",
          static_cast<long long>(done), c.epochs(),
          FormatDuration(r.seconds).c_str(), eval.perplexity,
          100 * eval.accuracy,
          eval.teacher_agreement < 0
              ? ""
              : absl::StrFormat(", teacher agreement %.2f%%",
                                100 * eval.teacher_agreement)
                    .c_str());
      std::fflush(stdout);
    }
  } else if (last || done % c.eval_every_epochs() == 0) {
    DISTILL_ASSIGN_OR_RETURN(EvalResult eval,
                             EvaluateSplit(job_, *job_.test, true));
    last_eval_ = eval.ToJson();
    record.update(last_eval_);
    if (verbose_) {
      std::printf(
          "epoch %lld/%d done in %s: test accuracy %.2f%%, test loss %.4f\n",
          static_cast<long long>(done), c.epochs(),
          FormatDuration(r.seconds).c_str(), 100 * eval.accuracy, eval.loss);
      std::fflush(stdout);
    }
  }
  DISTILL_RETURN_IF_ERROR(metrics_.Write(record));
  if (last || (c.checkpoint_every_epochs() > 0 &&
               done % c.checkpoint_every_epochs() == 0)) {
    DISTILL_ASSIGN_OR_RETURN(last_checkpoint_, Checkpoint(r.position));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::optional<double>> TrainingRun::TeacherNllOfTestSamples() {
  // The on-policy steps' sampling when the job has them; else that of an
  // empty on_policy section (its defaults).
  JobConfig c = job_.config;
  if (!c.has_on_policy()) {
    c.mutable_on_policy();
    ApplyDefaults(c);
  }
  DISTILL_ASSIGN_OR_RETURN(
      std::optional<double> nll,
      TeacherNllOfSamples(*job_.model, *job_.test,
                          LmEvalWindows(c.data().seq_len()),
                          *job_.teacher->any_input_teacher(),
                          OnPolicyOptionsFor(c, job_.comm->rank()), true));
  if (verbose_ && nll) {
    std::printf(
        "the teacher's NLL of the student's continuations of test text: "
        "%.3f per token\n",
        *nll);
    std::fflush(stdout);
  }
  return nll;
}

absl::StatusOr<nlohmann::json> TrainingRun::WriteSummary(
    const TrainPosition& end) {
  const std::filesystem::path dir(job_.config.run_dir());
  DISTILL_RETURN_IF_ERROR(job_.model->SaveFile((dir / "model.pt").string()));
  if (job_.model->is_torchscript()) {
    DISTILL_RETURN_IF_ERROR(
        job_.model->SaveTorchScript((dir / "model.torchscript.pt").string()));
  }
  if (last_eval_.is_null() || IsTokenJob(job_)) {
    // Resumed after the last epoch had finished: evaluate what was saved.
    // A language model's test split is read only here, at the end.
    DISTILL_ASSIGN_OR_RETURN(EvalResult eval,
                             EvaluateSplit(job_, *job_.test, true));
    (IsTokenJob(job_) ? test_eval_ : last_eval_) = eval.ToJson();
    if (verbose_ && IsTokenJob(job_)) {
      std::printf("test perplexity %.2f, next-token accuracy %.2f%%\n",
                  eval.perplexity, 100 * eval.accuracy);
      std::fflush(stdout);
    }
  }
  nlohmann::json samples;
  if (IsTokenJob(job_)) {
    DISTILL_ASSIGN_OR_RETURN(samples, EndOfJobSamples(job_, verbose_));
  }
  std::optional<double> teacher_nll;
  if (IsTokenJob(job_) && job_.teacher &&
      job_.teacher->any_input_teacher() != nullptr &&
      job_.model->zoo_module() != nullptr) {
    DISTILL_ASSIGN_OR_RETURN(teacher_nll, TeacherNllOfTestSamples());
  }
  nlohmann::json summary = BaseSummary(job_);
  if (!last_eval_.is_null()) summary.update(last_eval_);
  if (!test_eval_.is_null()) summary.update(test_eval_);
  summary["steps"] = end.global_step;
  summary["ranks"] = job_.comm->world_size();
  summary["train_seconds"] = train_seconds_;
  summary["samples_per_sec"] =
      trained_samples_ / std::max(train_seconds_, 1e-9);
  if (IsTokenJob(job_)) {
    summary["tokens_per_sec"] = trained_samples_ *
                                job_.config.data().seq_len() /
                                std::max(train_seconds_, 1e-9);
  }
  summary["loss_terms"] = last_epoch_terms_;
  summary["checkpoint"] = last_checkpoint_;
  if (!samples.is_null()) summary["samples"] = samples;
  if (teacher_nll) summary["test_teacher_nll_of_samples"] = *teacher_nll;
  DISTILL_RETURN_IF_ERROR(
      WriteJsonFile((dir / "summary.json").string(), summary));
  return summary;
}

}  // namespace distill::trainer
