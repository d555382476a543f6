// The QAT stage of a job (the `qat` config section, docs/QUANTIZATION.md):
// evaluates the trained student in FP32 and exports it to ONNX, calibrates
// the quantized network on training batches (PTQ) and evaluates it,
// fine-tunes it with fake quantization and the job's loss — the teacher
// still guiding through the TeacherClient unless qat.teacher_guided is
// false — then exports the INT8 QDQ model and writes
// <run_dir>/qat/quantization_report.json. Runs in one process (rank 0);
// not reentrant.
#ifndef DISTILL_TRAINER_INTERNAL_QAT_STAGE_H_
#define DISTILL_TRAINER_INTERNAL_QAT_STAGE_H_

#include <torch/torch.h>

#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "data/dataset.h"
#include "losses/composite.h"
#include "student/model.h"
#include "student/qat/observer.h"
#include "trainer/config.h"
#include "trainer/teacher/teacher_client.h"

namespace distill::trainer {

struct QatStageInputs {
  // All required except `teacher`; they must outlive the call.
  const JobConfig* config = nullptr;
  student::Model* model = nullptr;
  const data::Dataset* train = nullptr;
  const data::Dataset* test = nullptr;
  // The job's teacher; null when it has none.
  TeacherClient* teacher = nullptr;
  // The job's loss terms (used when the teacher guides fine-tuning).
  const losses::CompositeLoss* loss = nullptr;
  // The job's optimizer over `params` at learning rate `lr`.
  std::function<absl::StatusOr<std::unique_ptr<torch::optim::Optimizer>>(
      std::vector<torch::Tensor> params, double lr)>
      make_optimizer;
  // Print progress lines. Default: true.
  bool verbose = true;
};

// The activation observers `q` asks for (observer, percentile,
// averaging_constant).
student::qat::ObserverOptions ObserverOptionsOf(const v1::QatConfig& q);

// Creates <run_dir>/qat and returns it; PermissionDenied naming it when it
// cannot be made.
absl::StatusOr<std::filesystem::path> MakeQatDir(const JobConfig& config);

// Runs `run` on the first qat.calibration_batches batches (of batch_size)
// of a pass over `train` shuffled with the job's seed, unaugmented; stops
// at the first error.
absl::Status ForEachCalibrationBatch(
    const JobConfig& config, const data::Dataset& train,
    const std::function<absl::Status(const data::Batch&)>& run);

// What quantization-aware fine-tuning trains, as StepParts names it: the
// quantized network's `forward` (and, for a language model, `hidden` and
// `head_weight`, so that the loss runs over the head chunk by chunk).
struct QatFineTune {
  std::function<torch::Tensor(const torch::Tensor&)> forward;
  std::function<torch::Tensor(const torch::Tensor&)> hidden;
  std::function<torch::Tensor()> head_weight;
  // Called before each step with the fine-tuning epochs done so far
  // (fractions), to freeze statistics on schedule. Optional.
  std::function<void(double epochs_done)> before_step;
  // Appended to each progress line (" [bn frozen]"). Optional.
  std::function<std::string()> state;
  // Starts each progress line. Default: "qat".
  std::string label = "qat";
  // Names the step in errors. Default: "QAT step".
  std::string name = "QAT step";
};

// Fine-tuning with fake quantization in the one training loop, on one
// process: straight-through gradients, cosine learning rate from qat.lr to
// 0, the job's optimizer over in.model's parameters, qat.epochs passes
// (sampler seed + 1: not the distillation epochs' order), the teacher's
// targets when `guided`. Returns the last epoch's mean loss terms and
// "total".
absl::StatusOr<std::map<std::string, double>> FineTuneQuantized(
    const QatStageInputs& in, const QatFineTune& tune,
    const losses::CompositeLoss& loss, bool guided);

// The loss fine-tuning optimizes: the job's when `guided`, else hard-label
// cross entropy alone, made into `hard_only` (which must outlive its use).
absl::StatusOr<const losses::CompositeLoss*> FineTuneLoss(
    const QatStageInputs& in, bool guided,
    std::optional<losses::CompositeLoss>& hard_only);

// CheckQatSupported for a language model: a gpt student, no skip_layers,
// and a qat.group_size that divides its widths.
absl::Status CheckLmQatSupported(const JobConfig& config,
                                 student::Model& model);

// The QAT stage of a `gpt` student (trainer/qat_stage_lm.cc): FP32, INT8
// PTQ and QAT, 4-bit round-to-nearest, AWQ-style and QAT, and FP32
// fine-tuned as the QAT forms were (the control), each evaluated on the
// test windows; exports FP32, INT8 and 4-bit ONNX models and writes
// <run_dir>/qat/quantization_report.json.
absl::StatusOr<nlohmann::json> RunLmQatStage(const QatStageInputs& in);

// Checks, before any work starts, that `model` can be quantized as
// `config.qat` asks: InvalidArgument "qat.skip_layers[i]: ..." for a name
// that is no Conv2d or Linear of the model (listing those that are), and
// "qat: ..." for a student the stage cannot rewrite.
absl::Status CheckQatSupported(const JobConfig& config, student::Model& model);

// Runs the stage and returns the report it wrote.
absl::StatusOr<nlohmann::json> RunQatStage(const QatStageInputs& in);

}  // namespace distill::trainer

#endif  // DISTILL_TRAINER_INTERNAL_QAT_STAGE_H_
