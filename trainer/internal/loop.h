// The one training loop. Epochs of steps over this rank's shard of the
// training data: each batch is paired with its teacher targets (asked for
// ahead of time when the teacher answers asynchronously), split into
// micro-batches whose forward, loss and backward accumulate gradients, the
// last backward synchronizing them across ranks, then clipped and applied.
// The distillation epochs (trainer.cc) and the QAT stage's fine-tuning
// (qat_stage.cc) both run it; what differs between them comes in as
// LoopParts (the forward, optimizer, teacher), LoopSettings (learning rate,
// temperature, seeds) and LoopHooks (what happens around a step and when an
// epoch ends). Not thread-safe: one loop per process at a time.
#ifndef DISTILL_TRAINER_INTERNAL_LOOP_H_
#define DISTILL_TRAINER_INTERNAL_LOOP_H_

#include <torch/torch.h>

#include <cstdint>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "data/dataset.h"
#include "data/loader.h"
#include "losses/composite.h"
#include "trainer/config.h"
#include "trainer/dist/communicator.h"
#include "trainer/dist/grad_sync.h"
#include "trainer/internal/checkpoint.h"
#include "trainer/internal/on_policy.h"
#include "trainer/teacher/teacher_client.h"

namespace distill::trainer {

// How a rank walks the training data, the same for every loop.
struct EpochPlan {
  int64_t rank_batch = 0;       // samples per step on this rank
  int64_t steps_per_epoch = 0;  // >= 1
  int64_t total_steps = 0;      // steps_per_epoch x epochs
};

// The plan for `epochs` epochs over shards of `shard` samples on each of
// `world` ranks. InvalidArgument when an epoch would take no step (a batch
// larger than the data with data.drop_last_batch set).
absl::StatusOr<EpochPlan> PlanEpochs(const JobConfig& config, int64_t shard,
                                     int world, int epochs);

// The loader of `epoch` for batches of `rank_batch`: the config's queue
// depth, last-batch rule, seed and augmentation (unless `augment` is false).
data::LoaderOptions LoaderOptionsFor(const JobConfig& config,
                                     int64_t rank_batch, int64_t epoch,
                                     bool augment = true);

// Wall seconds an epoch spent in each phase of its steps, for the profile in
// metrics.jsonl (bench/ prints it). On the CPU every op is synchronous, so
// the clock between phases is the phase's own cost.
struct StepProfile {
  double data = 0;       // waiting for the loader's next batch
  double generate = 0;   // the student sampling on-policy batches
  double teacher = 0;    // teacher targets (in-process forward or remote wait)
  double forward = 0;    // student forward and loss terms
  double backward = 0;   // autograd backward (hooks start bucket all-reduces)
  double sync = 0;       // finishing gradient sync, broadcasting buffers
  double optimizer = 0;  // gradient clipping and the optimizer step

  nlohmann::json ToJson() const;
};

// What one optimizer step runs on; all must outlive the step.
struct StepParts {
  // The network being trained: the student, or its fake-quantized net.
  std::function<torch::Tensor(const torch::Tensor&)> forward;
  // A zoo language model instead trains through its output head chunk by
  // chunk (losses::CompositeLoss::ComputeOverHead), so that its [N, S, V]
  // logits are never all alive: `hidden` gives the final hidden states
  // [N, S, H] of a batch's tokens and `head_weight` the head [V, H]. Unset
  // (the default): the loss reads `forward`'s logits.
  std::function<torch::Tensor(const torch::Tensor&)> hidden;
  std::function<torch::Tensor()> head_weight;
  // The parameters `optimizer` updates (clipped together).
  std::vector<torch::Tensor> parameters;
  torch::optim::Optimizer* optimizer = nullptr;
  const losses::CompositeLoss* loss = nullptr;
  // On-policy steps' loss: `loss`'s terms that read the teacher. Required
  // when the loop has an on-policy sampler.
  const losses::CompositeLoss* on_policy_loss = nullptr;
  // Synchronizes gradients across ranks; null in a single process that
  // needs none (the QAT stage).
  GradSync* grad_sync = nullptr;
};

struct StepSettings {
  // Strided micro-batches per step (rows k, k+m, ...), >= 1. Default: 1.
  int micro_batches = 1;
  // Clip the global gradient norm to this; 0 disables. Default: 0.
  double grad_clip_norm = 0;
  // Token positions per chunk of the head and loss when StepParts::hidden
  // is set, >= 1. Default: 1024.
  int64_t chunk_tokens = 1024;
  // Names the step in errors ("training step 17: ..."). Default: "training
  // step".
  std::string name = "training step";
};

// One step's batch and where it stands.
struct StepInput {
  const data::Batch* batch = nullptr;
  // Null when there is no teacher.
  const losses::TeacherTargets* targets = nullptr;
  // The batch is the student's own samples (StepParts::on_policy_loss).
  bool on_policy = false;
  double lr = 0;
  int64_t step = 0;  // 0-based global step
  int64_t epoch = 0;
  int64_t total_steps = 0;
};

// One optimizer step: zeroes the gradients, runs forward, loss and backward
// per micro-batch (the last backward synchronizes the gradients), clips and
// steps. Returns the batch's loss: the total (a plain number, no graph) and
// each term, averaged over the micro-batches by their share of rows.
absl::StatusOr<losses::CompositeResult> RunStep(const StepParts& parts,
                                                const StepSettings& settings,
                                                const StepInput& input,
                                                StepProfile& profile);

// Everything a loop runs on beyond one step's parts.
struct LoopParts {
  StepParts step;
  const data::Dataset* train = nullptr;
  // Null: no targets (supervised training).
  TeacherClient* teacher = nullptr;
  // This process's place among the ranks (a local one for a single
  // process).
  Communicator* comm = nullptr;
  // Broadcast from rank 0 before every step when there are several ranks:
  // BatchNorm statistics follow rank 0, as in DDP. Default: none.
  std::vector<std::pair<std::string, torch::Tensor>> buffers;
  // Makes a share of the steps on-policy (language models); null: none.
  // With options().overlap and an asynchronous teacher the loop prefetches
  // one batch ahead, else none.
  OnPolicySampler* on_policy = nullptr;
};

struct LoopSettings {
  // The job: its data section, batch size and seed shape the epochs
  // (PlanEpochs, LoaderOptionsFor). Required; must outlive the loop.
  const JobConfig* config = nullptr;
  StepSettings step;
  // Epochs to run (the loop starts at the position's epoch), >= 1.
  int epochs = 1;
  // Seeds the sampler's permutation of each epoch.
  uint64_t sampler_seed = 0;
  // Batches whose targets are asked for ahead of the step, when the teacher
  // answers asynchronously. Default: 0.
  int prefetch_batches = 0;
  // The learning rate and the teacher's temperature at 0-based global
  // `step` of `plan`. Required.
  std::function<double(int64_t step, const EpochPlan& plan)> lr_at;
  std::function<double(int64_t step, const EpochPlan& plan)> temperature_at;
  // The error for a loss that is not finite after 0-based `step`. Required.
  std::function<absl::Status(double loss, int64_t step)> diverged;
};

// A finished step, for LoopHooks::after_step.
struct StepReport {
  const EpochPlan* plan = nullptr;
  TrainPosition position;     // after the step
  int64_t step_in_epoch = 0;  // 1-based
  double lr = 0;
  double loss = 0;
  std::map<std::string, double> terms;
  bool on_policy = false;
  int64_t epoch_samples = 0;  // this rank's samples so far this epoch
  double epoch_seconds = 0;   // since the epoch started
  // The teacher's stats since the previous call (TargetPrefetcher::
  // TakeStats); empty when there is no teacher.
  std::function<nlohmann::json()> take_teacher_stats;
};

// A finished epoch, for LoopHooks::close_epoch.
struct EpochReport {
  const EpochPlan* plan = nullptr;
  int64_t epoch = 0;       // 0-based
  TrainPosition position;  // the start of the next epoch
  double seconds = 0;
  int64_t samples = 0;  // this rank's
  // Sums over this rank's samples of the loss and of each term.
  double loss_sum = 0;
  std::map<std::string, double> term_sums;
  // Samples each term was computed on (on-policy steps leave out the terms
  // that need no teacher).
  std::map<std::string, int64_t> term_samples;
  int64_t on_policy_steps = 0;
  StepProfile profile;
  // The teacher's totals for the epoch; empty when there is no teacher.
  nlohmann::json teacher_stats = nlohmann::json::object();

  // term_sums per sample the term was computed on.
  std::map<std::string, double> MeanTerms() const;
};

// What the caller does around the steps; unset hooks do nothing.
struct LoopHooks {
  // Before each step's targets are used and its forward runs.
  std::function<absl::Status(const TrainPosition& position,
                             const EpochPlan& plan)>
      before_step;
  // After each step; true stops the loop there.
  std::function<absl::StatusOr<bool>(const StepReport& report)> after_step;
  // After each epoch (the teacher has been told, see EpochDone).
  std::function<absl::Status(const EpochReport& report)> close_epoch;
  // The teacher failed at `position`: returns the checkpoint written, if
  // any, which the error then names.
  std::function<absl::StatusOr<std::string>(const TrainPosition& position)>
      teacher_failed;
};

// Runs epochs from `position` (its cursor counts samples over all ranks)
// to settings.epochs, updating `position` after every step. Returns true
// when after_step stopped it early.
absl::StatusOr<bool> RunLoop(const LoopParts& parts,
                             const LoopSettings& settings,
                             const LoopHooks& hooks, TrainPosition& position);

}  // namespace distill::trainer

#endif  // DISTILL_TRAINER_INTERNAL_LOOP_H_
