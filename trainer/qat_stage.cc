#include "trainer/internal/qat_stage.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <optional>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/file.h"
#include "common/status.h"
#include "common/torch_status.h"
#include "data/loader.h"
#include "data/sampler.h"
#include "student/qat/onnx_export.h"
#include "student/qat/qat_net.h"
#include "student/qat/report.h"
#include "trainer/dist/communicator.h"
#include "trainer/internal/evaluate.h"
#include "trainer/internal/loop.h"
#include "trainer/internal/metrics.h"

namespace distill::trainer {
namespace {

namespace fs = std::filesystem;
constexpr double kPi = 3.14159265358979323846;
using ::distill::student::qat::QatNet;
using ::distill::v1::QatConfig;

student::qat::QatNetOptions NetOptions(const QatConfig& q) {
  student::qat::QatNetOptions options;
  options.observer = ObserverOptionsOf(q);
  options.skip_layers.assign(q.skip_layers().begin(), q.skip_layers().end());
  return options;
}

student::qat::AccuracyEntry Entry(const EvalResult& e) {
  return {e.accuracy, e.per_class_accuracy};
}

absl::Status WriteBytes(const std::string& path, const void* data,
                        size_t size) {
  return WriteStringAtomically(
      path, absl::string_view(static_cast<const char*>(data), size));
}

// PTQ: the float network (BatchNorm on running statistics) runs over the
// calibration batches while the observers record every quantized layer's
// input; then the scales freeze.
absl::Status Calibrate(const JobConfig& c, const data::Dataset& train,
                       QatNet& net) {
  net.train(false);
  net.SetObserving(true);
  DISTILL_RETURN_IF_ERROR(net.SetFakeQuant(false));
  DISTILL_RETURN_IF_ERROR(
      ForEachCalibrationBatch(c, train, [&](const data::Batch& batch) {
        return TorchCall("calibrating the observers", [&] {
          torch::NoGradGuard no_grad;
          net.forward(batch.inputs);
        });
      }));
  net.SetObserving(false);
  return net.SetFakeQuant(true);
}

nlohmann::json Settings(const QatConfig& q, bool guided, double temperature) {
  return {
      {"calibration_batches", q.calibration_batches()},
      {"epochs", q.epochs()},
      {"lr", q.lr()},
      {"observer", QatConfig::Observer_Name(q.observer())},
      {"percentile", q.percentile()},
      {"averaging_constant", q.averaging_constant()},
      {"freeze_observers_after_epochs", q.freeze_observers_after_epochs()},
      {"freeze_bn_after_epochs", q.freeze_bn_after_epochs()},
      {"teacher_guided", guided},
      {"temperature", temperature},
      {"weights", "int8 symmetric, per output channel (axis 0), [-127, 127]"},
      {"activations", "int8 symmetric, per tensor, zero point 0"},
      {"onnx_opset", student::qat::kOnnxOpset}};
}

}  // namespace

student::qat::ObserverOptions ObserverOptionsOf(const QatConfig& q) {
  student::qat::ObserverOptions options;
  options.method = q.observer() == QatConfig::PERCENTILE
                       ? student::qat::ObserverMethod::kPercentile
                       : student::qat::ObserverMethod::kMovingAverageMinMax;
  options.percentile = q.percentile();
  options.averaging_constant = q.averaging_constant();
  return options;
}

absl::StatusOr<std::filesystem::path> MakeQatDir(const JobConfig& c) {
  const fs::path dir = fs::path(c.run_dir()) / "qat";
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) {
    return absl::PermissionDeniedError(
        absl::StrCat("cannot create ", dir.string(), ": ", ec.message()));
  }
  return dir;
}

absl::Status ForEachCalibrationBatch(
    const JobConfig& c, const data::Dataset& train,
    const std::function<absl::Status(const data::Batch&)>& run) {
  data::SamplerOptions sampler_options;
  sampler_options.seed = c.seed();
  data::Sampler sampler(train.size(), sampler_options);
  sampler.SetEpoch(0);
  data::Loader loader(
      train, sampler.Remaining(),
      LoaderOptionsFor(c, c.batch_size(), /*epoch=*/0, /*augment=*/false));
  for (int i = 0; i < c.qat().calibration_batches(); ++i) {
    DISTILL_ASSIGN_OR_RETURN(std::optional<data::Batch> batch, loader.Next());
    if (!batch) break;
    DISTILL_RETURN_IF_ERROR(run(*batch));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::map<std::string, double>> FineTuneQuantized(
    const QatStageInputs& in, const QatFineTune& tune,
    const losses::CompositeLoss& loss, bool guided) {
  const JobConfig& c = *in.config;
  const QatConfig& q = c.qat();
  DISTILL_ASSIGN_OR_RETURN(std::unique_ptr<torch::optim::Optimizer> optimizer,
                           in.make_optimizer(in.model->parameters(), q.lr()));
  DISTILL_ASSIGN_OR_RETURN(
      std::unique_ptr<Communicator> local,
      CreateCommunicator(WorldInfo{}, CommunicatorOptions{}));
  LoopParts parts;
  parts.step.forward = tune.forward;
  parts.step.hidden = tune.hidden;
  parts.step.head_weight = tune.head_weight;
  parts.step.parameters = in.model->parameters();
  parts.step.optimizer = optimizer.get();
  parts.step.loss = &loss;
  parts.train = in.train;
  parts.teacher = guided ? in.teacher : nullptr;
  parts.comm = local.get();

  LoopSettings settings;
  settings.config = &c;
  settings.step.grad_clip_norm = c.grad_clip_norm();
  settings.step.chunk_tokens = c.loss_chunk_tokens();
  settings.step.name = tune.name;
  settings.epochs = q.epochs();
  settings.sampler_seed = c.seed() + 1;  // not the distillation epochs' order
  settings.prefetch_batches = c.teacher().prefetch_batches();
  settings.lr_at = [&q](int64_t step, const EpochPlan& plan) {
    return 0.5 * q.lr() *
           (1 + std::cos(kPi * step / std::max<int64_t>(plan.total_steps, 1)));
  };
  settings.temperature_at = [&c](int64_t, const EpochPlan&) {
    return c.temperature();
  };
  settings.diverged = [](double value, int64_t step) {
    return absl::InternalError(
        absl::StrCat("QAT loss became ", value, " at step ", step + 1,
                     " (lower qat.lr or set grad_clip_norm)"));
  };

  LoopHooks hooks;
  hooks.before_step = [&](const TrainPosition& at, const EpochPlan& plan) {
    if (tune.before_step) {
      tune.before_step(static_cast<double>(at.global_step) /
                       plan.steps_per_epoch);
    }
    return absl::OkStatus();
  };
  hooks.after_step = [&](const StepReport& r) -> absl::StatusOr<bool> {
    const int64_t step = r.position.global_step;
    if (in.verbose && (step % c.log_every_steps() == 0 ||
                       step % r.plan->steps_per_epoch == 0)) {
      std::printf(
          "%s epoch %lld/%d step %lld/%lld loss %.4f lr %.4g%s "
          "%.0f samples/s\n",
          tune.label.c_str(), static_cast<long long>(r.position.epoch + 1),
          q.epochs(), static_cast<long long>(step),
          static_cast<long long>(r.plan->total_steps), r.loss, r.lr,
          tune.state ? tune.state().c_str() : "",
          r.epoch_samples / std::max(r.epoch_seconds, 1e-9));
      std::fflush(stdout);
    }
    return false;
  };
  std::map<std::string, double> last_terms;
  hooks.close_epoch = [&](const EpochReport& r) {
    last_terms = r.MeanTerms();
    last_terms["total"] = r.loss_sum / std::max<int64_t>(r.samples, 1);
    return absl::OkStatus();
  };

  TrainPosition position;
  DISTILL_RETURN_IF_ERROR(RunLoop(parts, settings, hooks, position).status());
  return last_terms;
}

absl::StatusOr<const losses::CompositeLoss*> FineTuneLoss(
    const QatStageInputs& in, bool guided,
    std::optional<losses::CompositeLoss>& hard_only) {
  if (guided) return in.loss;
  std::vector<losses::TermSpec> terms(1);
  terms[0].name = "hard_ce";
  terms[0].weight = 1.0;
  DISTILL_ASSIGN_OR_RETURN(hard_only, losses::CompositeLoss::Create(terms));
  return &*hard_only;
}

absl::Status CheckQatSupported(const JobConfig& config, student::Model& model) {
  student::ZooModule* zoo = model.zoo_module();
  if (zoo == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(
        "qat supports zoo students only (cnn_student, cnn_teacher, mlp or "
        "gpt): '",
        model.description(),
        "' is a TorchScript model, whose layers cannot be rewritten for "
        "quantization here"));
  }
  if (zoo->is_language_model()) return CheckLmQatSupported(config, model);
  const std::vector<std::string> known = QatNet::QuantizableLayers(*zoo);
  const auto& skip = config.qat().skip_layers();
  for (int i = 0; i < skip.size(); ++i) {
    if (std::find(known.begin(), known.end(), skip[i]) == known.end()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "qat.skip_layers[", i, "] '", skip[i],
          "' is not a Conv2d or Linear layer of ", model.description(),
          "; its layers: ", absl::StrJoin(known, ", ")));
    }
  }
  auto net = QatNet::Create(*zoo, NetOptions(config.qat()));
  if (!net.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("qat cannot quantize ",
                                                   model.description(), ": ",
                                                   net.status().message()));
  }
  return absl::OkStatus();
}

absl::StatusOr<nlohmann::json> RunQatStage(const QatStageInputs& in) {
  const JobConfig& c = *in.config;
  const QatConfig& q = c.qat();
  DISTILL_RETURN_IF_ERROR(CheckQatSupported(c, *in.model));
  if (in.model->zoo_module()->is_language_model()) return RunLmQatStage(in);
  const bool guided = q.teacher_guided() && in.teacher != nullptr;
  DISTILL_ASSIGN_OR_RETURN(const fs::path dir, MakeQatDir(c));
  const int64_t eval_batch = 512;
  const student::ZooInput shape{in.test->input_shape(), in.test->num_classes()};
  student::qat::OnnxExportOptions onnx_options;
  onnx_options.input_shape = shape.input_shape;
  onnx_options.num_classes = shape.num_classes;
  onnx_options.graph_name = in.model->description();

  // FP32: LibTorch's own forward, and the BatchNorm-folded ONNX export.
  in.model->train(false);
  torch::Tensor fp32_logits;
  DISTILL_ASSIGN_OR_RETURN(
      EvalResult fp32,
      EvaluateForward(
          [&](const torch::Tensor& x) { return in.model->forward(x); },
          *in.test, eval_batch, nullptr, &fp32_logits));
  fp32_logits = fp32_logits.to(torch::kFloat32).contiguous();
  DISTILL_RETURN_IF_ERROR(WriteBytes((dir / "fp32_logits.bin").string(),
                                     fp32_logits.data_ptr(),
                                     fp32_logits.numel() * sizeof(float)));
  DISTILL_ASSIGN_OR_RETURN(
      std::unique_ptr<QatNet> net,
      QatNet::Create(*in.model->zoo_module(), NetOptions(q)));
  DISTILL_ASSIGN_OR_RETURN(
      std::vector<student::qat::ExportStep> fp32_plan,
      TorchCall("folding the FP32 model", [&] { return net->ExportPlan(); }));
  onnx_options.int8 = false;
  DISTILL_ASSIGN_OR_RETURN(
      onnx::ModelProto fp32_onnx,
      student::qat::BuildOnnxModel(fp32_plan, onnx_options));
  DISTILL_ASSIGN_OR_RETURN(
      int64_t fp32_bytes, student::qat::WriteOnnxModel(
                              fp32_onnx, (dir / "student_fp32.onnx").string()));

  // The last evaluation is of the model that gets exported: its
  // predictions are kept so the export can be checked in another runtime.
  std::vector<int64_t> predictions;
  auto evaluate_net = [&]() {
    net->train(false);
    return EvaluateForward(
        [&](const torch::Tensor& x) { return net->forward(x); }, *in.test,
        eval_batch, &predictions);
  };
  DISTILL_RETURN_IF_ERROR(Calibrate(c, *in.train, *net));
  DISTILL_ASSIGN_OR_RETURN(EvalResult ptq, evaluate_net());
  if (in.verbose) {
    std::printf(
        "qat: FP32 %.2f%%, PTQ INT8 %.2f%% after %d calibration batches\n",
        100 * fp32.accuracy, 100 * ptq.accuracy, q.calibration_batches());
    std::fflush(stdout);
  }

  std::optional<EvalResult> qat;
  std::map<std::string, double> qat_terms;
  if (q.epochs() > 0) {
    std::optional<losses::CompositeLoss> hard_only;
    DISTILL_ASSIGN_OR_RETURN(const losses::CompositeLoss* loss,
                             FineTuneLoss(in, guided, hard_only));
    QatFineTune tune;
    tune.forward = [&net](const torch::Tensor& x) { return net->forward(x); };
    tune.before_step = [&net, &q](double epochs_done) {
      if (!net->batch_norm_frozen() &&
          epochs_done >= q.freeze_bn_after_epochs()) {
        net->FreezeBatchNorm();
      }
      if (net->observing() &&
          epochs_done >= q.freeze_observers_after_epochs()) {
        net->SetObserving(false);
      }
    };
    tune.state = [&net]() {
      return absl::StrCat(net->batch_norm_frozen() ? " [bn frozen]" : "",
                          net->observing() ? "" : " [observers frozen]");
    };
    net->SetObserving(true);
    net->train(true);
    absl::StatusOr<std::map<std::string, double>> terms =
        FineTuneQuantized(in, tune, *loss, guided);
    net->SetObserving(false);
    net->train(false);
    DISTILL_ASSIGN_OR_RETURN(qat_terms, std::move(terms));
    DISTILL_ASSIGN_OR_RETURN(qat, evaluate_net());
  }

  net->train(false);
  const EvalResult& final_eval = qat ? *qat : ptq;
  std::vector<uint8_t> prediction_bytes(predictions.begin(), predictions.end());
  DISTILL_RETURN_IF_ERROR(WriteBytes((dir / "int8_predictions.bin").string(),
                                     prediction_bytes.data(),
                                     prediction_bytes.size()));
  DISTILL_ASSIGN_OR_RETURN(
      std::vector<student::qat::ExportStep> int8_plan,
      TorchCall("folding the INT8 model", [&] { return net->ExportPlan(); }));
  onnx_options.int8 = true;
  DISTILL_ASSIGN_OR_RETURN(
      onnx::ModelProto int8_onnx,
      student::qat::BuildOnnxModel(int8_plan, onnx_options));
  DISTILL_ASSIGN_OR_RETURN(
      int64_t int8_bytes, student::qat::WriteOnnxModel(
                              int8_onnx, (dir / "student_int8.onnx").string()));
  if (q.epochs() > 0) {
    DISTILL_RETURN_IF_ERROR(
        in.model->SaveFile((dir / "student_qat_weights.pt").string()));
  }

  student::qat::QuantizationReportInputs report;
  report.model = in.model->description();
  report.params = in.model->num_parameters();
  report.fp32_onnx_bytes = fp32_bytes;
  report.int8_onnx_bytes = int8_bytes;
  report.fp32 = Entry(fp32);
  report.ptq_int8 = Entry(ptq);
  if (qat) report.qat_int8 = Entry(*qat);
  report.quantized_layers = net->quantized_layers();
  report.skipped_layers = net->skipped_layers();
  report.settings = Settings(q, guided, c.temperature());
  if (!qat_terms.empty()) report.settings["last_epoch_loss_terms"] = qat_terms;
  report.files = {
      {"int8_onnx", "student_int8.onnx"},
      {"fp32_onnx", "student_fp32.onnx"},
      {"int8_predictions",
       "int8_predictions.bin (uint8 argmax per test sample)"},
      {"fp32_logits",
       "fp32_logits.bin (float32 [test samples, classes], LibTorch)"},
  };
  if (qat) report.files["qat_weights"] = "student_qat_weights.pt";
  nlohmann::json json = student::qat::BuildQuantizationReport(report);
  json["exported_int8_accuracy"] = final_eval.accuracy;
  DISTILL_RETURN_IF_ERROR(
      WriteJsonFile((dir / "quantization_report.json").string(), json));
  if (in.verbose) {
    const std::string qat_part =
        qat ? absl::StrFormat("  QAT INT8 %.2f%%", 100 * qat->accuracy) : "";
    std::printf(
        "qat: FP32 %.2f%%  PTQ INT8 %.2f%%%s  INT8 ONNX %lld bytes = "
        "%.3f x FP32; report in %s\n",
        100 * fp32.accuracy, 100 * ptq.accuracy, qat_part.c_str(),
        static_cast<long long>(int8_bytes),
        static_cast<double>(int8_bytes) / std::max<int64_t>(fp32_bytes, 1),
        (dir / "quantization_report.json").string().c_str());
    std::fflush(stdout);
  }
  return json;
}

}  // namespace distill::trainer
