// The QAT stage of a `gpt` student (trainer/internal/qat_stage.h). The
// distilled FP32 model is measured first; then each quantized form in turn,
// every one starting from the FP32 weights: INT8 post-training (observers
// on the calibration batches), INT8 fine-tuned with fake quantization,
// 4-bit weights by round-to-nearest, with AWQ-style input-channel scales
// searched on the calibration batches, and fine-tuned with 4-bit fake
// quantization from the AWQ-scaled start; and, as a control, the FP32
// model fine-tuned the same way without quantization. Each is evaluated on
// the test windows, with the loss split by how frequent the next token is
// in the training split.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <numeric>
#include <optional>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/file.h"
#include "common/status.h"
#include "common/torch_status.h"
#include "data/token_windows.h"
#include "student/gpt.h"
#include "student/qat/gpt_quant.h"
#include "student/qat/onnx_export.h"
#include "student/qat/onnx_gpt.h"
#include "trainer/internal/evaluate.h"
#include "trainer/internal/metrics.h"
#include "trainer/internal/qat_stage.h"

namespace distill::trainer {
namespace {

namespace fs = std::filesystem;
using ::distill::student::qat::GptOnnxForm;
using ::distill::student::qat::GptQuant;
using ::distill::student::qat::GptQuantMode;
using ::distill::v1::QatConfig;

// Token-frequency buckets: tokens sorted from the most to the least
// frequent in the training split; a token is "frequent" while the tokens
// before it hold less than half of all occurrences, "rare" once they hold
// 90% (so the rare bucket's tokens together make the last 10% of the
// text), "middle" in between. Tokens never seen in training are rare.
constexpr const char* kBucketNames[] = {"frequent", "middle", "rare"};
constexpr double kFrequentShare = 0.5;
constexpr double kRareShare = 0.9;

absl::StatusOr<torch::Tensor> TokenBuckets(const data::Dataset& train) {
  const auto* windows = dynamic_cast<const data::TokenWindows*>(&train);
  if (windows == nullptr) {
    return absl::InvalidArgumentError(
        "qat: a language-model student needs token windows (data.dataset "
        "\"tokens\")");
  }
  const data::TokenFile& file = windows->file();
  const int64_t vocab = file.info().vocab_size;
  std::vector<int64_t> counts(vocab, 0);
  for (int64_t i = 0; i < file.size(); ++i) ++counts[file.at(i)];
  std::vector<int64_t> order(vocab);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int64_t a, int64_t b) { return counts[a] > counts[b]; });
  std::vector<int64_t> bucket(vocab);
  const double total = std::max<int64_t>(file.size(), 1);
  int64_t before = 0;
  for (int64_t token : order) {
    const double share = before / total;
    bucket[token] = share < kFrequentShare ? 0 : share < kRareShare ? 1 : 2;
    before += counts[token];
  }
  return torch::tensor(bucket, torch::kLong);
}

absl::StatusOr<student::Gpt> GptOf(student::Model& model) {
  student::ZooModule* zoo = model.zoo_module();
  auto gpt = zoo == nullptr ? nullptr
                            : std::dynamic_pointer_cast<student::GptImpl>(
                                  zoo->shared_from_this());
  if (gpt == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("qat quantizes the language-model architecture gpt; '",
                     model.description(), "' is not one"));
  }
  return student::Gpt(gpt);
}

student::qat::GptQuantOptions QuantOptions(const QatConfig& q) {
  student::qat::GptQuantOptions options;
  options.observer = ObserverOptionsOf(q);
  options.group.bits = 4;
  options.group.group_size = q.group_size();
  options.group.symmetric = !q.group_zero_points();
  return options;
}

struct Row {
  std::string name;
  EvalResult eval;
  int64_t weight_bytes = 0;
  // The ONNX file of this form, when it was exported.
  std::string onnx_file;
  int64_t file_bytes = 0;
};

nlohmann::json RowJson(const Row& row, const Row& fp32) {
  nlohmann::json buckets = nlohmann::json::object();
  for (size_t b = 0; b < row.eval.bucket_loss.size(); ++b) {
    buckets[kBucketNames[b]] = {{"loss", row.eval.bucket_loss[b]},
                                {"tokens", row.eval.bucket_tokens[b]}};
  }
  nlohmann::json file = nullptr, file_ratio = nullptr;
  if (!row.onnx_file.empty()) {
    file = {{"name", row.onnx_file}, {"bytes", row.file_bytes}};
    file_ratio = static_cast<double>(row.file_bytes) / fp32.file_bytes;
  }
  return {{"name", row.name},
          {"onnx_file", file},
          {"file_bytes_vs_fp32", file_ratio},
          {"perplexity", row.eval.perplexity},
          {"perplexity_vs_fp32", row.eval.perplexity / fp32.eval.perplexity},
          {"loss", row.eval.loss},
          {"next_token_accuracy", row.eval.accuracy},
          {"weight_bytes", row.weight_bytes},
          {"weight_bytes_vs_fp32",
           static_cast<double>(row.weight_bytes) / fp32.weight_bytes},
          {"loss_by_token_frequency", buckets}};
}

// The model's parameters, to start each quantized form from the FP32 ones.
std::vector<torch::Tensor> Snapshot(student::Model& model) {
  std::vector<torch::Tensor> saved;
  for (const torch::Tensor& p : model.parameters()) {
    saved.push_back(p.detach().clone());
  }
  return saved;
}

void Restore(student::Model& model, const std::vector<torch::Tensor>& saved) {
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> params = model.parameters();
  for (size_t i = 0; i < params.size(); ++i) params[i].copy_(saved[i]);
}

}  // namespace

absl::Status CheckLmQatSupported(const JobConfig& config,
                                 student::Model& model) {
  const QatConfig& q = config.qat();
  if (q.skip_layers_size() > 0) {
    return absl::InvalidArgumentError(
        "qat.skip_layers applies to image students; a gpt student quantizes "
        "every weight matrix");
  }
  DISTILL_ASSIGN_OR_RETURN(student::Gpt gpt, GptOf(model));
  auto quant = GptQuant::Create(gpt, QuantOptions(q));
  if (!quant.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("qat.group_size: ", quant.status().message(), " of ",
                     model.description()));
  }
  return absl::OkStatus();
}

absl::StatusOr<nlohmann::json> RunLmQatStage(const QatStageInputs& in) {
  const JobConfig& c = *in.config;
  const QatConfig& q = c.qat();
  student::Model& model = *in.model;
  DISTILL_RETURN_IF_ERROR(CheckLmQatSupported(c, model));
  DISTILL_ASSIGN_OR_RETURN(student::Gpt gpt, GptOf(model));
  DISTILL_ASSIGN_OR_RETURN(std::unique_ptr<GptQuant> quant,
                           GptQuant::Create(gpt, QuantOptions(q)));
  const bool guided = q.teacher_guided() && in.teacher != nullptr;
  DISTILL_ASSIGN_OR_RETURN(const fs::path dir, MakeQatDir(c));
  DISTILL_ASSIGN_OR_RETURN(const torch::Tensor buckets,
                           TokenBuckets(*in.train));
  std::vector<Row> rows;
  auto measure = [&](const std::string& name,
                     GptQuantMode mode) -> absl::Status {
    quant->SetMode(mode);
    DISTILL_ASSIGN_OR_RETURN(
        EvalResult eval, EvaluateLanguageModel(
                             model, *in.test, LmEvalWindows(c.data().seq_len()),
                             c.loss_chunk_tokens(), nullptr,
                             /*restore_train=*/false, buckets));
    rows.push_back({name, eval, quant->WeightBytes(mode)});
    if (in.verbose) {
      std::printf("qat: %-14s test perplexity %8.3f (%+.2f%% vs FP32)\n",
                  name.c_str(), eval.perplexity,
                  100 * (eval.perplexity / rows[0].eval.perplexity - 1));
      std::fflush(stdout);
    }
    return absl::OkStatus();
  };
  model.train(false);
  auto run_calibration = [&](const char* what) {
    return ForEachCalibrationBatch(c, *in.train, [&](const data::Batch& b) {
      return TorchCall(what, [&] {
        torch::NoGradGuard no_grad;
        gpt->Hidden(b.inputs, nullptr);  // observes the head's input too
      });
    });
  };
  // Writes the model as it is quantized now to <dir>/`file` and notes it
  // on the last row.
  auto export_onnx = [&](GptOnnxForm form,
                         const std::string& file) -> absl::Status {
    DISTILL_ASSIGN_OR_RETURN(
        onnx::ModelProto onnx,
        student::qat::BuildGptOnnx(gpt, *quant, form, c.data().seq_len()));
    DISTILL_ASSIGN_OR_RETURN(
        rows.back().file_bytes,
        student::qat::WriteOnnxModel(onnx, (dir / file).string()));
    rows.back().onnx_file = file;
    return absl::OkStatus();
  };
  std::optional<losses::CompositeLoss> hard_only;
  DISTILL_ASSIGN_OR_RETURN(const losses::CompositeLoss* loss,
                           FineTuneLoss(in, guided, hard_only));
  nlohmann::json fine_tuning = nlohmann::json::object();
  auto fine_tune =
      [&](const std::string& label,
          const std::function<void(double)>& before_step,
          const std::function<std::string()>& state) -> absl::Status {
    QatFineTune tune;
    tune.forward = [&model](const torch::Tensor& x) {
      return model.forward(x);
    };
    tune.hidden = [gpt](const torch::Tensor& tokens) mutable {
      return gpt->Hidden(tokens, nullptr);
    };
    tune.head_weight = [gpt]() mutable { return gpt->HeadWeight(); };
    tune.before_step = before_step;
    tune.state = state;
    tune.label = label;
    model.train(true);
    absl::StatusOr<std::map<std::string, double>> terms =
        FineTuneQuantized(in, tune, *loss, guided);
    model.train(false);
    DISTILL_RETURN_IF_ERROR(terms.status());
    fine_tuning[label] = {{"last_epoch_loss_terms", *terms}};
    return absl::OkStatus();
  };

  const std::vector<torch::Tensor> fp32_weights = Snapshot(model);
  DISTILL_RETURN_IF_ERROR(measure("FP32", GptQuantMode::kFloat));
  DISTILL_RETURN_IF_ERROR(
      export_onnx(GptOnnxForm::kFloat, "student_fp32.onnx"));

  // INT8: the observers see the float activations of the calibration
  // batches, then the activations are quantized at their scales.
  quant->SetMode(GptQuantMode::kInt8);
  quant->SetActivationQuant(false);
  quant->SetObserving(true);
  DISTILL_RETURN_IF_ERROR(run_calibration("calibrating the INT8 observers"));
  quant->SetObserving(false);
  if (!quant->Calibrated()) {
    return absl::FailedPreconditionError(
        "qat: the INT8 calibration saw no training batch (fewer training "
        "windows than batch_size with data.drop_last_batch?)");
  }
  quant->SetActivationQuant(true);
  DISTILL_RETURN_IF_ERROR(measure("INT8 PTQ", GptQuantMode::kInt8));
  DISTILL_RETURN_IF_ERROR(
      export_onnx(GptOnnxForm::kInt8, "student_int8_ptq.onnx"));
  if (q.epochs() > 0) {
    GptQuant& qt = *quant;
    qt.SetObserving(true);
    DISTILL_RETURN_IF_ERROR(fine_tune(
        "qat int8",
        [&qt, &q](double epochs_done) {
          if (qt.observing() &&
              epochs_done >= q.freeze_observers_after_epochs()) {
            qt.SetObserving(false);
          }
        },
        [&qt] { return qt.observing() ? "" : " [observers frozen]"; }));
    qt.SetObserving(false);
    DISTILL_RETURN_IF_ERROR(measure("INT8 QAT", GptQuantMode::kInt8));
    DISTILL_RETURN_IF_ERROR(
        export_onnx(GptOnnxForm::kInt8, "student_int8_qat.onnx"));
    DISTILL_RETURN_IF_ERROR(
        model.SaveFile((dir / "student_int8_qat_weights.pt").string()));
    Restore(model, fp32_weights);
  }

  // 4-bit weight-only.
  DISTILL_RETURN_IF_ERROR(measure("4-bit RTN", GptQuantMode::kGroupwise));
  DISTILL_RETURN_IF_ERROR(
      export_onnx(GptOnnxForm::kNBits, "student_4bit_rtn.onnx"));
  quant->SetMode(GptQuantMode::kFloat);
  quant->StartCapture(q.awq_rows());
  DISTILL_RETURN_IF_ERROR(run_calibration("collecting AWQ calibration inputs"));
  quant->StopCapture();
  quant->SetMode(GptQuantMode::kGroupwise);
  DISTILL_ASSIGN_OR_RETURN(auto searches,
                           TorchCall("searching AWQ-style scales",
                                     [&] { return quant->SearchAwq(); }));
  nlohmann::json awq = nlohmann::json::object();
  for (const auto& [layer, search] : searches) {
    awq[layer] = {{"alpha", search.alpha},
                  {"output_mse", search.error},
                  {"rtn_output_mse", search.rtn_error}};
  }
  DISTILL_RETURN_IF_ERROR(measure("4-bit AWQ", GptQuantMode::kGroupwise));
  DISTILL_RETURN_IF_ERROR(
      export_onnx(GptOnnxForm::kNBits, "student_4bit_awq.onnx"));
  if (q.epochs() > 0) {
    DISTILL_RETURN_IF_ERROR(fine_tune("qat 4-bit", nullptr, nullptr));
    DISTILL_RETURN_IF_ERROR(measure("4-bit QAT", GptQuantMode::kGroupwise));
    DISTILL_RETURN_IF_ERROR(
        export_onnx(GptOnnxForm::kNBits, "student_4bit_qat.onnx"));
    DISTILL_RETURN_IF_ERROR(
        model.SaveFile((dir / "student_4bit_qat_weights.pt").string()));
    Restore(model, fp32_weights);

    // The control: the same fine-tuning without quantization, so that what
    // the QAT rows gained from one more epoch of training is not credited
    // to quantization.
    quant->SetMode(GptQuantMode::kFloat);
    DISTILL_RETURN_IF_ERROR(fine_tune("fp32 control", nullptr, nullptr));
    DISTILL_RETURN_IF_ERROR(measure("FP32 tuned", GptQuantMode::kFloat));
    Restore(model, fp32_weights);
  }
  quant->SetMode(GptQuantMode::kFloat);

  // The report.
  const Row& fp32 = rows[0];
  auto find = [&](const std::string& name) -> const Row* {
    for (const Row& r : rows) {
      if (r.name == name) return &r;
    }
    return nullptr;
  };
  nlohmann::json json;
  json["model"] = model.description();
  json["params"] = model.num_parameters();
  json["language_model"] = true;
  json["rows"] = nlohmann::json::array();
  for (const Row& r : rows) json["rows"].push_back(RowJson(r, fp32));
  json["token_frequency_buckets"] = {
      {"order", "tokens by count in the training split, most frequent first"},
      {"frequent",
       "tokens before which the more frequent ones hold < 50% of "
       "the training tokens"},
      {"middle", "the rest of the tokens up to 90%"},
      {"rare",
       "the rarest tokens, together the last 10% of the training "
       "tokens (and tokens never seen in training)"}};
  json["awq_search"] = awq;
  json["fine_tuning"] = fine_tuning;
  json["settings"] = {
      {"calibration_batches", q.calibration_batches()},
      {"epochs", q.epochs()},
      {"lr", q.lr()},
      {"observer", QatConfig::Observer_Name(q.observer())},
      {"teacher_guided", guided},
      {"temperature", c.temperature()},
      {"int8_weights",
       "symmetric per output row [-127, 127]: every Linear, the head and "
       "the embeddings (weight-only)"},
      {"int8_activations",
       "symmetric per tensor at each Linear's and the head's input; "
       "LayerNorm, softmax, GELU and residual adds in float"},
      {"4bit_weights",
       absl::StrFormat("every weight matrix, groups of %d inputs, %s; "
                       "activations in float",
                       q.group_size(),
                       q.group_zero_points() ? "with zero points"
                                             : "symmetric (zero point 8)")},
      {"awq_rows", q.awq_rows()},
      {"4bit_qat_start", "the AWQ-scaled weights (scales kept fixed)"}};
  // The goals of docs/QUANTIZATION.md, measured.
  const Row* int8 = find("INT8 QAT") ? find("INT8 QAT") : find("INT8 PTQ");
  const Row* best4 = nullptr;
  for (const char* name : {"4-bit RTN", "4-bit AWQ", "4-bit QAT"}) {
    const Row* r = find(name);
    if (r != nullptr &&
        (best4 == nullptr || r->eval.perplexity < best4->eval.perplexity)) {
      best4 = r;
    }
  }
  const Row* rtn = find("4-bit RTN");
  const Row* best_scaled = find("4-bit AWQ");
  if (const Row* qat4 = find("4-bit QAT");
      qat4 != nullptr && qat4->eval.perplexity < best_scaled->eval.perplexity) {
    best_scaled = qat4;
  }
  // Against the FP32 model fine-tuned as the QAT rows were, when it was.
  const Row* tuned = find("FP32 tuned");
  auto vs_tuned = [&](const Row* r) -> nlohmann::json {
    if (tuned == nullptr) return nullptr;
    return r->eval.perplexity / tuned->eval.perplexity;
  };
  json["goals"] = {
      {"int8",
       {{"row", int8->name},
        {"file_bytes_vs_fp32",
         static_cast<double>(int8->file_bytes) / fp32.file_bytes},
        {"at_most_0.3x_file", int8->file_bytes <= 0.3 * fp32.file_bytes},
        {"perplexity_vs_fp32", int8->eval.perplexity / fp32.eval.perplexity},
        {"perplexity_vs_fp32_tuned", vs_tuned(int8)},
        {"within_2_percent",
         int8->eval.perplexity <= 1.02 * fp32.eval.perplexity}}},
      {"4bit",
       {{"best_row", best4->name},
        {"perplexity_vs_fp32", best4->eval.perplexity / fp32.eval.perplexity},
        {"perplexity_vs_fp32_tuned", vs_tuned(best4)},
        {"within_5_percent",
         best4->eval.perplexity <= 1.05 * fp32.eval.perplexity},
        {"weight_bytes_vs_fp32",
         static_cast<double>(best4->weight_bytes) / fp32.weight_bytes},
        {"at_most_0.2x_weight_bytes",
         best4->weight_bytes <= 0.2 * fp32.weight_bytes},
        {"best_of_awq_and_qat", best_scaled->name},
        {"its_perplexity_vs_rtn",
         best_scaled->eval.perplexity / rtn->eval.perplexity},
        {"beats_rtn", best_scaled->eval.perplexity < rtn->eval.perplexity}}}};
  json["onnx"] = {
      {"opset", student::qat::kGptOnnxOpset},
      {"input", absl::StrCat("tokens int64 [batch, ", c.data().seq_len(),
                             "], right-padded (causal: padding never changes "
                             "the positions before it)")},
      {"output", "logits float [batch, seq_len, vocab]"},
      {"int8",
       "QDQ: int8 weights per row with DequantizeLinear, "
       "QuantizeLinear/DequantizeLinear on every Linear input"},
      {"4bit",
       "com.microsoft MatMulNBits; the embeddings unpack the same "
       "codes in the graph"},
      {"exported", "every form but the FP32 control, each row's onnx_file"}};
  // What the job summary reads.
  json["perplexity"] = nlohmann::json::object();
  for (const Row& r : rows) json["perplexity"][r.name] = r.eval.perplexity;
  DISTILL_RETURN_IF_ERROR(
      WriteJsonFile((dir / "quantization_report.json").string(), json));
  if (in.verbose) {
    std::printf("\n%-10s %10s %8s %12s %8s %11s %10s %10s %10s\n", "form",
                "test ppl", "vs FP32", "weight bytes", "x FP32", "ONNX bytes",
                "frequent", "middle", "rare loss");
    for (const Row& r : rows) {
      const auto& b = r.eval.bucket_loss;
      const std::string file_bytes =
          r.onnx_file.empty() ? "-" : absl::StrCat(r.file_bytes);
      std::printf(
          "%-10s %10.3f %+7.2f%% %12lld %8.3f %11s %10.4f %10.4f %10.4f\n",
          r.name.c_str(), r.eval.perplexity,
          100 * (r.eval.perplexity / fp32.eval.perplexity - 1),
          static_cast<long long>(r.weight_bytes),
          static_cast<double>(r.weight_bytes) / fp32.weight_bytes,
          file_bytes.c_str(), b.size() > 0 ? b[0] : 0.0,
          b.size() > 1 ? b[1] : 0.0, b.size() > 2 ? b[2] : 0.0);
    }
    std::printf("report in %s\n",
                (dir / "quantization_report.json").string().c_str());
    std::fflush(stdout);
  }
  return json;
}

}  // namespace distill::trainer
