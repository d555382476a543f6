#include "trainer/internal/loop.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <optional>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "common/torch_status.h"
#include "data/sampler.h"
#include "trainer/teacher/teacher_prefetch.h"

namespace distill::trainer {
namespace {

using Clock = std::chrono::steady_clock;

double SecondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// The loss of one micro-batch: through the logits, or chunk by chunk
// through a language model's head.
absl::StatusOr<losses::CompositeResult> PieceLoss(
    const StepParts& parts, const StepSettings& settings,
    const StepInput& input, const torch::Tensor& inputs,
    const torch::Tensor& labels, const losses::TeacherTargets* teacher) {
  if (parts.hidden) {
    losses::HeadLossInputs in;
    in.hidden = parts.hidden(inputs);
    in.head_weight = parts.head_weight();
    in.teacher = teacher;
    in.labels = labels;
    in.step = input.step;
    in.epoch = input.epoch;
    in.total_steps = input.total_steps;
    in.chunk_tokens = settings.chunk_tokens;
    return parts.loss->ComputeOverHead(in);
  }
  losses::LossInputs in;
  in.student_logits = parts.forward(inputs);
  in.teacher = teacher;
  in.labels = labels;
  in.step = input.step;
  in.epoch = input.epoch;
  in.total_steps = input.total_steps;
  return parts.loss->Compute(in);
}

}  // namespace

absl::StatusOr<EpochPlan> PlanEpochs(const JobConfig& config, int64_t shard,
                                     int world, int epochs) {
  EpochPlan plan;
  plan.rank_batch = config.batch_size() / world;
  plan.steps_per_epoch = config.data().drop_last_batch()
                             ? shard / plan.rank_batch
                             : (shard + plan.rank_batch - 1) / plan.rank_batch;
  if (plan.steps_per_epoch == 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "batch_size ", config.batch_size(), " is larger than the ",
        shard * world,
        " training samples and data.drop_last_batch is set: no step to take"));
  }
  plan.total_steps = plan.steps_per_epoch * epochs;
  return plan;
}

data::LoaderOptions LoaderOptionsFor(const JobConfig& config,
                                     int64_t rank_batch, int64_t epoch,
                                     bool augment) {
  const auto& d = config.data();
  data::LoaderOptions options;
  options.batch_size = rank_batch;
  options.queue_depth = d.loader_queue_depth();
  options.drop_last_batch = d.drop_last_batch();
  options.augment.enabled = augment && d.augment().enabled();
  options.augment.crop_padding = d.augment().crop_padding();
  options.augment.horizontal_flip = d.augment().horizontal_flip();
  options.seed = config.seed();
  options.epoch = epoch;
  return options;
}

nlohmann::json StepProfile::ToJson() const {
  return {{"data", data},          {"generate", generate}, {"teacher", teacher},
          {"forward", forward},    {"backward", backward}, {"sync", sync},
          {"optimizer", optimizer}};
}

std::map<std::string, double> EpochReport::MeanTerms() const {
  std::map<std::string, double> mean;
  for (const auto& [name, sum] : term_sums) {
    const auto counted = term_samples.find(name);
    mean[name] =
        sum / std::max<int64_t>(
                  counted == term_samples.end() ? samples : counted->second, 1);
  }
  return mean;
}

absl::StatusOr<losses::CompositeResult> RunStep(const StepParts& parts,
                                                const StepSettings& settings,
                                                const StepInput& input,
                                                StepProfile& profile) {
  const data::Batch& batch = *input.batch;
  losses::CompositeResult result;
  DISTILL_RETURN_IF_ERROR(TorchCall(
      absl::StrCat(settings.name, " ", input.step + 1), [&]() -> absl::Status {
        for (auto& group : parts.optimizer->param_groups()) {
          group.options().set_lr(input.lr);
        }
        parts.optimizer->zero_grad();
        const int64_t n = batch.labels.size(0);
        const int64_t pieces = std::min<int64_t>(settings.micro_batches, n);
        double total = 0;
        for (int64_t k = 0; k < pieces; ++k) {
          // Strided like the rank shards: one rank with k micro-batches
          // sees the same BatchNorm batches as k ranks with one each.
          const torch::Tensor rows = torch::arange(k, n, pieces);
          const double share = static_cast<double>(rows.size(0)) / n;
          std::optional<losses::TeacherTargets> piece_targets;
          if (input.targets != nullptr) {
            piece_targets =
                pieces == 1 ? *input.targets : input.targets->Rows(rows);
          }
          auto phase_start = Clock::now();
          const torch::Tensor inputs =
              pieces == 1 ? batch.inputs : batch.inputs.index_select(0, rows);
          const torch::Tensor labels =
              pieces == 1 ? batch.labels : batch.labels.index_select(0, rows);
          const losses::TeacherTargets* teacher =
              piece_targets ? &*piece_targets : nullptr;
          StepParts piece_parts = parts;
          if (input.on_policy) piece_parts.loss = parts.on_policy_loss;
          DISTILL_ASSIGN_OR_RETURN(
              losses::CompositeResult piece,
              PieceLoss(piece_parts, settings, input, inputs, labels, teacher));
          profile.forward += SecondsSince(phase_start);
          phase_start = Clock::now();
          if (parts.grad_sync != nullptr) {
            parts.grad_sync->BeginBackward(/*sync=*/k + 1 == pieces,
                                           input.step);
          }
          (piece.total * share).backward();
          profile.backward += SecondsSince(phase_start);
          phase_start = Clock::now();
          if (parts.grad_sync != nullptr) {
            DISTILL_RETURN_IF_ERROR(parts.grad_sync->FinishBackward());
          }
          profile.sync += SecondsSince(phase_start);
          total += piece.total.item<double>() * share;
          for (const auto& [name, v] : piece.terms) {
            result.terms[name] += v * share;
          }
        }
        result.total = torch::tensor(total);
        const auto optimizer_start = Clock::now();
        if (settings.grad_clip_norm > 0) {
          torch::nn::utils::clip_grad_norm_(parts.parameters,
                                            settings.grad_clip_norm);
        }
        parts.optimizer->step();
        profile.optimizer += SecondsSince(optimizer_start);
        return absl::OkStatus();
      }));
  return result;
}

absl::StatusOr<bool> RunLoop(const LoopParts& parts,
                             const LoopSettings& settings,
                             const LoopHooks& hooks, TrainPosition& position) {
  const JobConfig* config = settings.config;
  Communicator& comm = *parts.comm;
  const int world = comm.world_size();
  data::SamplerOptions sampler_options;
  sampler_options.seed = settings.sampler_seed;
  sampler_options.rank = comm.rank();
  sampler_options.world_size = world;
  sampler_options.drop_last = config->data().drop_last();
  data::Sampler sampler(parts.train->size(), sampler_options);
  DISTILL_ASSIGN_OR_RETURN(
      const EpochPlan plan,
      PlanEpochs(*config, sampler.shard_size(), world, settings.epochs));
  TeacherClient* teacher = parts.teacher;
  OnPolicySampler* on_policy = parts.on_policy;
  if (on_policy != nullptr && parts.step.on_policy_loss == nullptr) {
    return absl::InternalError("an on-policy loop needs its on-policy loss");
  }
  if (on_policy != nullptr && position.sampled.tokens.defined()) {
    on_policy->Restore(position.global_step, position.sampled);
  }
  const bool asynchronous = teacher != nullptr && teacher->asynchronous();
  const int depth = !asynchronous ? 0
                    : on_policy != nullptr
                        ? (on_policy->options().overlap ? 1 : 0)
                        : settings.prefetch_batches;

  for (int64_t epoch = position.epoch; epoch < settings.epochs; ++epoch) {
    sampler.SetEpoch(epoch);
    if (epoch == position.epoch && position.cursor > 0) {
      DISTILL_RETURN_IF_ERROR(sampler.SetCursor(position.cursor / world));
    }
    data::Loader loader(*parts.train, sampler.Remaining(),
                        LoaderOptionsFor(*config, plan.rank_batch, epoch));
    // Teacher targets are asked for ahead of the step that needs them
    // (when the teacher answers asynchronously); the schedule gives the
    // temperature of a future step.
    // On-policy steps sample their windows as the prefetcher reads them.
    TargetPrefetcher::Rewrite rewrite;
    if (on_policy != nullptr) {
      rewrite = [on_policy, first = position.global_step](data::Batch batch,
                                                          int64_t i) {
        return on_policy->Rewrite(std::move(batch), first + i);
      };
    }
    TargetPrefetcher prefetcher(
        loader, teacher, depth,
        [&, first = position.global_step](int64_t i) {
          return settings.temperature_at(first + i, plan);
        },
        std::move(rewrite));

    EpochReport epoch_report;
    epoch_report.plan = &plan;
    epoch_report.epoch = epoch;
    const auto epoch_start = Clock::now();
    StepProfile& profile = epoch_report.profile;
    while (true) {
      auto phase_start = Clock::now();
      const double teacher_before = prefetcher.teacher_seconds();
      absl::StatusOr<std::optional<TargetPrefetcher::Item>> item =
          prefetcher.Next();
      // Next() reads the loader and waits for (or, in process, computes)
      // the teacher's targets; the prefetcher says which share was which.
      const double teacher_seconds =
          prefetcher.teacher_seconds() - teacher_before;
      const double generate_seconds =
          on_policy != nullptr ? on_policy->TakeGenerateSeconds() : 0.0;
      profile.teacher += teacher_seconds;
      profile.generate += generate_seconds;
      profile.data +=
          SecondsSince(phase_start) - teacher_seconds - generate_seconds;
      if (!item.ok() && prefetcher.teacher_failed() && hooks.teacher_failed) {
        // Keep what was trained: the teacher may be back for --resume.
        DISTILL_ASSIGN_OR_RETURN(std::string saved,
                                 hooks.teacher_failed(position));
        return absl::Status(
            item.status().code(),
            absl::StrCat(item.status().message(),
                         saved.empty() ? "" : "; checkpoint written to ",
                         saved));
      }
      if (!item.ok()) return item.status();
      if (!*item) break;
      const data::Batch& batch = (*item)->batch;
      const int64_t n = batch.labels.size(0);
      if (hooks.before_step) {
        DISTILL_RETURN_IF_ERROR(hooks.before_step(position, plan));
      }
      StepInput input;
      input.batch = &batch;
      input.targets = (*item)->targets ? &*(*item)->targets : nullptr;
      input.on_policy =
          on_policy != nullptr && on_policy->IsOnPolicy(position.global_step);
      input.lr = settings.lr_at(position.global_step, plan);
      input.step = position.global_step;
      input.epoch = epoch;
      input.total_steps = plan.total_steps;
      if (world > 1 && !parts.buffers.empty()) {
        // As DDP does: BatchNorm statistics follow rank 0.
        phase_start = Clock::now();
        DISTILL_RETURN_IF_ERROR(parts.step.grad_sync->BroadcastFromRankZero(
            parts.buffers, absl::StrCat("broadcast of buffers at step ",
                                        position.global_step + 1)));
        profile.sync += SecondsSince(phase_start);
      }
      DISTILL_ASSIGN_OR_RETURN(
          losses::CompositeResult step_loss,
          RunStep(parts.step, settings.step, input, profile));
      const double loss = step_loss.total.item<double>();
      if (!std::isfinite(loss)) {
        return settings.diverged(loss, position.global_step);
      }
      sampler.Advance(n);
      position.cursor = sampler.cursor() * world;
      position.epoch = epoch;
      ++position.global_step;
      // With overlap the next step's windows may be sampled already: a
      // checkpoint keeps them, so a resumed run trains on the same ones.
      position.sampled = on_policy != nullptr
                             ? on_policy->SampledFor(position.global_step)
                             : SampledWindows{};
      epoch_report.loss_sum += loss * n;
      for (const auto& [name, v] : step_loss.terms) {
        epoch_report.term_sums[name] += v * n;
        epoch_report.term_samples[name] += n;
      }
      if (input.on_policy) ++epoch_report.on_policy_steps;
      epoch_report.samples += n;
      if (!hooks.after_step) continue;

      StepReport step_report;
      step_report.plan = &plan;
      step_report.position = position;
      step_report.step_in_epoch =
          (sampler.cursor() + plan.rank_batch - 1) / plan.rank_batch;
      step_report.lr = input.lr;
      step_report.loss = loss;
      step_report.terms = std::move(step_loss.terms);
      step_report.on_policy = input.on_policy;
      step_report.epoch_samples = epoch_report.samples;
      step_report.epoch_seconds = SecondsSince(epoch_start);
      step_report.take_teacher_stats = [&] {
        return teacher != nullptr ? prefetcher.TakeStats()
                                  : nlohmann::json::object();
      };
      DISTILL_ASSIGN_OR_RETURN(const bool stop, hooks.after_step(step_report));
      if (stop) return true;
    }
    epoch_report.seconds = SecondsSince(epoch_start);
    // The epoch is complete: the next position is the start of the next one.
    position.epoch = epoch + 1;
    position.cursor = 0;
    epoch_report.position = position;
    if (teacher != nullptr) {
      epoch_report.teacher_stats = prefetcher.EpochStats();
      DISTILL_RETURN_IF_ERROR(teacher->EpochDone());
    }
    if (hooks.close_epoch) {
      DISTILL_RETURN_IF_ERROR(hooks.close_epoch(epoch_report));
    }
  }
  return false;
}

}  // namespace distill::trainer
