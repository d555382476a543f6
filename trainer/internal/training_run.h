// The named steps of a training run around the one loop (internal/loop.h):
// resume from the newest checkpoint, start every rank from rank 0's
// weights, after each step write the progress line and metrics record, a
// checkpoint on schedule and agree with the other ranks whether to stop,
// close each epoch with an evaluation, its record and a checkpoint, and
// write the summary at the end. Rank 0 writes every file; all ranks take
// part in the agreements. One TrainingRun per Train(); not thread-safe.
#ifndef DISTILL_TRAINER_INTERNAL_TRAINING_RUN_H_
#define DISTILL_TRAINER_INTERNAL_TRAINING_RUN_H_

#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "trainer/internal/checkpoint.h"
#include "trainer/internal/evaluate.h"
#include "trainer/internal/job.h"
#include "trainer/internal/loop.h"
#include "trainer/internal/metrics.h"
#include "trainer/trainer.h"

namespace distill::trainer {

// Evaluates the job's student on `split` (its test split, or the validation
// split of token data): EvaluateLanguageModel with the job's teacher for
// token data, Evaluate for images. Leaves the student in train(
// `restore_train`).
absl::StatusOr<EvalResult> EvaluateSplit(Job& job, const data::Dataset& split,
                                         bool restore_train);

class TrainingRun {
 public:
  // `job` (assembled for a training mode) and `options` must outlive the
  // run.
  TrainingRun(Job& job, const RunOptions& options);

  // Opens metrics.jsonl (rank 0).
  absl::Status Open();
  // The position to start from: the newest checkpoint's with
  // options.resume (model and optimizer restored), else the beginning.
  // FailedPrecondition when the checkpoint's position does not split across
  // this number of ranks.
  absl::StatusOr<TrainPosition> Resume();
  // Copies rank 0's weights and buffers to every rank.
  absl::Status BroadcastInitialWeights();
  // The line that opens the run (rank 0, verbose).
  void PrintStart() const;

  // The loop's parts, settings and hooks for this job, calling the steps
  // below.
  LoopParts Parts() const;
  LoopSettings Settings() const;
  LoopHooks Hooks();

  // After a step: the progress line and "train" record every
  // log_every_steps and at the end of an epoch (rank 0), a checkpoint
  // every checkpoint_every_steps or when stopping; true when the ranks
  // agreed to stop.
  absl::StatusOr<bool> AfterStep(const StepReport& report);
  // True on every rank when any rank was signalled (should_stop) or
  // stop_after_steps is reached at `global_step`: the ranks stop at the
  // same step boundary.
  absl::StatusOr<bool> AgreeToStop(int64_t global_step);
  // After an epoch: its "epoch" record with an evaluation when due (every
  // eval_every_epochs and after the last) and a checkpoint when due (every
  // checkpoint_every_epochs and after the last), on rank 0.
  absl::Status CloseEpoch(const EpochReport& report);
  // Writes a checkpoint of `position` on rank 0 and returns its path ("" on
  // the other ranks).
  absl::StatusOr<std::string> Checkpoint(const TrainPosition& position);
  // Rank 0 at the end: model.pt (and model.torchscript.pt), an evaluation
  // if none ran since a resume, and summary.json, which it returns.
  absl::StatusOr<nlohmann::json> WriteSummary(const TrainPosition& end);
  // A language model's test windows continued by the student and scored
  // by the teacher (TeacherNllOfSamples, with the on-policy sampling when
  // the job has it); std::nullopt when the teacher's encoding cannot say.
  absl::StatusOr<std::optional<double>> TeacherNllOfTestSamples();

  // The newest checkpoint written ("" before any).
  const std::string& last_checkpoint() const { return last_checkpoint_; }
  // The newest evaluation (null before any).
  const nlohmann::json& last_eval() const { return last_eval_; }

 private:
  Job& job_;
  const RunOptions& options_;
  const bool leader_;
  const bool verbose_;
  MetricsWriter metrics_;
  std::string last_checkpoint_;
  nlohmann::json last_eval_;
  // A language model's test-split evaluation, run at the end.
  nlohmann::json test_eval_;
  std::map<std::string, double> last_epoch_terms_;
  double train_seconds_ = 0;
  int64_t trained_samples_ = 0;
};

// The fields every summary.json starts with: name, mode, model, params,
// epochs, batch size, seed, and the teacher and temperature of a
// distillation.
nlohmann::json BaseSummary(const Job& job);

}  // namespace distill::trainer

#endif  // DISTILL_TRAINER_INTERNAL_TRAINING_RUN_H_
