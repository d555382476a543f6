#include "teacher_server/served_model.h"

#include <filesystem>
#include <memory>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/file_hash.h"
#include "common/status.h"
#include "common/torch_status.h"
#include "student/inference.h"
#include "student/model.h"
#include "student/zoo.h"
#include "teacher_server/output_head.h"

namespace distill::teacher {
namespace {

absl::StatusOr<torch::Dtype> InputTorchDType(v1::Tensor::DType dtype) {
  switch (dtype) {
    case v1::Tensor::FLOAT32:
      return torch::kFloat;
    case v1::Tensor::INT64:
      return torch::kLong;
    case v1::Tensor::INT32:
      return torch::kInt;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("input dtype must be FLOAT32, INT64 or INT32, got ",
                       v1::Tensor::DType_Name(dtype)));
  }
}

}  // namespace

absl::StatusOr<ServedModel> LoadServedModel(const ModelSource& source) {
  if (source.arch.empty() == source.torchscript.empty()) {
    return absl::InvalidArgumentError(
        "give exactly one of a zoo architecture (with weights) and a "
        "TorchScript file");
  }
  if (!source.arch.empty() && source.weights.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the zoo teacher '", source.arch, "' needs a weights file"));
  }
  for (int64_t d : source.input_shape) {
    if (d < 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("input shape [", absl::StrJoin(source.input_shape, ", "),
                       "] must have positive dimensions"));
    }
  }
  DISTILL_ASSIGN_OR_RETURN(torch::Dtype input_dtype,
                           InputTorchDType(source.input_dtype));
  const bool tokens = TakesTokens(source.input_dtype);
  if (tokens && source.input_shape.size() != 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "a language model takes token ids of shape [S]; input shape [",
        absl::StrJoin(source.input_shape, ", "), "] has ",
        source.input_shape.size(), " dimensions"));
  }
  if (!tokens && !source.tokenizer.empty()) {
    return absl::InvalidArgumentError(
        "a tokenizer goes with a language model, whose inputs are token ids "
        "(input dtype int32 or int64)");
  }
  const std::string& file =
      source.torchscript.empty() ? source.weights : source.torchscript;
  if (!std::filesystem::is_regular_file(file)) {
    return absl::NotFoundError(absl::StrCat(
        source.torchscript.empty() ? "weights" : "TorchScript model",
        " file not found: ", file));
  }

  ServedModel served;
  served.input_shape = source.input_shape;
  served.input_dtype = source.input_dtype;
  DISTILL_ASSIGN_OR_RETURN(served.hash, FileSha256Hex(file));
  if (!source.tokenizer.empty()) {
    if (!std::filesystem::is_regular_file(source.tokenizer)) {
      return absl::NotFoundError(
          absl::StrCat("tokenizer file not found: ", source.tokenizer));
    }
    DISTILL_ASSIGN_OR_RETURN(served.tokenizer_sha256,
                             FileSha256Hex(source.tokenizer));
  }
  served.name = source.torchscript.empty()
                    ? source.arch
                    : std::filesystem::path(file).filename().string();

  student::ModelSpec spec{source.arch, source.torchscript, source.arch_options};
  student::ZooInput zoo_input{source.input_shape, source.num_classes, tokens};
  DISTILL_ASSIGN_OR_RETURN(std::unique_ptr<student::Model> model,
                           student::Model::Create(spec, zoo_input));
  if (!source.weights.empty()) {
    DISTILL_RETURN_IF_ERROR(Annotate(model->LoadFile(source.weights),
                                     "loading the teacher's weights"));
  }
  model->train(false);
  for (torch::Tensor& p : model->parameters()) p.set_requires_grad(false);

  std::vector<int64_t> probe_shape = {2};
  probe_shape.insert(probe_shape.end(), source.input_shape.begin(),
                     source.input_shape.end());
  DISTILL_ASSIGN_OR_RETURN(
      torch::Tensor out,
      TorchCall(
          absl::StrCat("running the teacher '", model->description(),
                       "' on zeros [", absl::StrJoin(probe_shape, ", "), "]"),
          [&] {
            torch::InferenceMode guard;
            return model->forward(torch::zeros(
                probe_shape, torch::TensorOptions().dtype(input_dtype)));
          }));
  if ((out.dim() != 2 && out.dim() != 3) || out.size(0) != 2 ||
      !out.is_floating_point()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the teacher '", model->description(), "' returns ",
        c10::toString(out.scalar_type()), " [",
        absl::StrJoin(out.sizes(), ", "),
        "] for a batch of 2; expected floating-point logits [2, C] or "
        "[2, S, V]"));
  }
  if (tokens && (out.dim() != 3 || out.size(1) != source.input_shape[0])) {
    return absl::InvalidArgumentError(
        absl::StrCat("the language model '", model->description(),
                     "' returns [", absl::StrJoin(out.sizes(), ", "),
                     "] for token ids [", absl::StrJoin(probe_shape, ", "),
                     "]; expected logits [2, ", source.input_shape[0], ", V]"));
  }
  served.output_shape.assign(out.sizes().begin() + 1, out.sizes().end());
  if (tokens) served.context_length = source.input_shape[0];
  // Served teachers never train: prepared for inference (BatchNorm folded,
  // convs and linear layers on oneDNN), as the trainer's in-process teacher is.
  DISTILL_ASSIGN_OR_RETURN(std::shared_ptr<student::InferenceModel> prepared,
                           student::InferenceModel::Create(std::move(model)));
  served.how = prepared->how();
  // Token ids reach the model as int64, whatever width the wire used.
  served.forward = [prepared, tokens](const torch::Tensor& inputs) {
    return prepared->forward(tokens ? inputs.to(torch::kLong) : inputs)
        .to(torch::kFloat);
  };
  student::ZooModule* zoo = prepared->model().zoo_module();
  // Hidden states pay only when narrower than the vocabulary (trainers
  // refuse H >= V).
  if (tokens && zoo != nullptr && zoo->is_language_model() &&
      zoo->HeadWeight().size(1) < served.num_classes()) {
    DISTILL_ASSIGN_OR_RETURN(
        std::shared_ptr<const losses::OutputHead> head,
        TorchCall("reading the teacher's output head",
                  [&]() -> std::shared_ptr<const losses::OutputHead> {
                    auto h = std::make_shared<losses::OutputHead>();
                    h->weight =
                        zoo->HeadWeight().detach().to(torch::kFloat).clone();
                    return h;
                  }));
    DISTILL_ASSIGN_OR_RETURN(served.head_sha256, OutputHeadSha256(*head));
    served.head = std::move(head);
    served.hidden = [prepared, zoo](const torch::Tensor& inputs) {
      return zoo->Hidden(inputs.to(torch::kLong), nullptr).to(torch::kFloat);
    };
  }
  return served;
}

}  // namespace distill::teacher
