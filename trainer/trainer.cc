#include "trainer/trainer.h"

#include <filesystem>

#include "common/status.h"
#include "trainer/internal/evaluate.h"
#include "trainer/internal/job.h"
#include "trainer/internal/loop.h"
#include "trainer/internal/metrics.h"
#include "trainer/internal/qat_stage.h"
#include "trainer/internal/training_run.h"

namespace distill::trainer {
namespace {

// Mode EVALUATE: the student on the test set, into summary.json.
absl::StatusOr<RunResult> Evaluation(Job& job) {
  DISTILL_ASSIGN_OR_RETURN(EvalResult eval,
                           EvaluateSplit(job, *job.test, false));
  RunResult result;
  result.summary = BaseSummary(job);
  result.summary.update(eval.ToJson());
  std::filesystem::create_directories(job.config.run_dir());
  DISTILL_RETURN_IF_ERROR(WriteJsonFile(
      (std::filesystem::path(job.config.run_dir()) / "summary.json").string(),
      result.summary));
  return result;
}

// Modes TRAIN and DISTILL: resume, run the epochs, write the summary.
absl::StatusOr<RunResult> Train(Job& job, const RunOptions& options) {
  TrainingRun run(job, options);
  DISTILL_RETURN_IF_ERROR(run.Open());
  DISTILL_ASSIGN_OR_RETURN(TrainPosition position, run.Resume());
  // Every rank starts from rank 0's weights, whatever it initialized.
  DISTILL_RETURN_IF_ERROR(run.BroadcastInitialWeights());
  run.PrintStart();
  job.model->train(true);
  DISTILL_ASSIGN_OR_RETURN(
      const bool stopped,
      RunLoop(run.Parts(), run.Settings(), run.Hooks(), position));
  RunResult result;
  result.stopped = stopped;
  result.checkpoint = run.last_checkpoint();
  if (stopped || job.comm->rank() != 0) return result;
  DISTILL_ASSIGN_OR_RETURN(result.summary, run.WriteSummary(position));
  return result;
}

// The QAT stage on the job's (trained) student; its report joins the
// summary under "qat".
absl::Status Quantize(Job& job, const RunOptions& options, RunResult& result) {
  QatStageInputs in;
  in.config = &job.config;
  in.model = job.model.get();
  in.train = job.train.get();
  in.test = job.test.get();
  in.teacher = job.teacher.get();
  in.loss = &*job.loss;
  in.make_optimizer = [&job](std::vector<torch::Tensor> params, double lr) {
    v1::OptimizerConfig optimizer = job.config.optimizer();
    optimizer.set_lr(lr);
    return MakeOptimizer(optimizer, std::move(params));
  };
  in.verbose = options.verbose;
  DISTILL_ASSIGN_OR_RETURN(nlohmann::json report, RunQatStage(in));
  if (result.summary.is_null()) result.summary = BaseSummary(job);
  nlohmann::json& qat = result.summary["qat"];
  qat = {{"report", "qat/quantization_report.json"}};
  for (const char* key : {"accuracy", "onnx_file_bytes", "perplexity"}) {
    if (report.contains(key)) qat[key] = report[key];
  }
  return WriteJsonFile(
      (std::filesystem::path(job.config.run_dir()) / "summary.json").string(),
      result.summary);
}

}  // namespace

absl::StatusOr<RunResult> RunJob(const JobConfig& config,
                                 const RunOptions& options) {
  Job job;
  DISTILL_RETURN_IF_ERROR(
      AssembleJob(config, options.world, options.teacher, job));
  if (config.mode() == JobConfig::EVALUATE) return Evaluation(job);
  if (config.mode() == JobConfig::QUANTIZE) {
    RunResult result;
    DISTILL_RETURN_IF_ERROR(Quantize(job, options, result));
    return result;
  }
  DISTILL_ASSIGN_OR_RETURN(RunResult result, Train(job, options));
  if (config.has_qat() && !result.stopped && job.comm->rank() == 0) {
    DISTILL_RETURN_IF_ERROR(Quantize(job, options, result));
  }
  return result;
}

}  // namespace distill::trainer
