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

#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "data/dataset.h"
#include "losses/composite.h"
#include "student/model.h"
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

// Checks, before any work starts, that `model` can be quantized as
// `config.qat` asks: InvalidArgument "qat.skip_layers[i]: ..." for a name
// that is no Conv2d or Linear of the model (listing those that are), and
// "qat: ..." for a student the stage cannot rewrite.
absl::Status CheckQatSupported(const JobConfig& config, student::Model& model);

// Runs the stage and returns the report it wrote.
absl::StatusOr<nlohmann::json> RunQatStage(const QatStageInputs& in);

}  // namespace distill::trainer

#endif  // DISTILL_TRAINER_INTERNAL_QAT_STAGE_H_
