#include "trainer/teacher_client.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status.h"
#include "common/torch_status.h"

namespace distill::trainer {

absl::StatusOr<int64_t> ProbeNumClasses(student::Model& model,
                                        const student::ZooInput& data,
                                        const std::string& role) {
  std::vector<int64_t> shape = {2};
  shape.insert(shape.end(), data.input_shape.begin(), data.input_shape.end());
  DISTILL_ASSIGN_OR_RETURN(
      torch::Tensor out,
      TorchCall(absl::StrCat("running the ", role, " model '",
                             model.description(), "' on input ",
                             absl::StrJoin(shape, "x")),
                [&] {
                  torch::NoGradGuard no_grad;
                  model.train(false);
                  torch::Tensor logits = model.forward(torch::zeros(shape));
                  model.train(true);
                  return logits;
                }));
  if (out.dim() != 2 || out.size(0) != 2) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the ", role, " model '", model.description(),
        "' returns shape [", absl::StrJoin(out.sizes(), ", "),
        "] for a batch of 2; expected [2, classes]"));
  }
  if (out.size(1) != data.num_classes) {
    return absl::FailedPreconditionError(absl::StrCat(
        role, " '", model.description(), "' outputs ", out.size(1),
        " classes but the data has ", data.num_classes));
  }
  return out.size(1);
}

absl::StatusOr<std::unique_ptr<InProcessTeacher>> InProcessTeacher::Create(
    const student::ModelSpec& spec, const std::string& weights,
    const student::ZooInput& data) {
  DISTILL_ASSIGN_OR_RETURN(auto model, student::Model::Create(spec, data));
  if (!weights.empty()) {
    DISTILL_RETURN_IF_ERROR(
        Annotate(model->LoadFile(weights), "loading the teacher's weights"));
  }
  DISTILL_ASSIGN_OR_RETURN(int64_t classes,
                           ProbeNumClasses(*model, data, "teacher"));
  for (auto& p : model->parameters()) p.set_requires_grad(false);
  // The teacher never trains: run it prepared for inference (BatchNorm
  // folded, linear layers on oneDNN), which is most of a distillation
  // step's time on a CPU.
  DISTILL_ASSIGN_OR_RETURN(
      auto prepared, student::InferenceModel::Create(std::move(model)));
  return std::unique_ptr<InProcessTeacher>(
      new InProcessTeacher(std::move(prepared), classes));
}

absl::StatusOr<losses::TeacherTargets> InProcessTeacher::Targets(
    const data::Batch& batch, double temperature) {
  return TorchCall("teacher forward", [&] {
    // NoGradGuard rather than InferenceMode: the targets are saved for the
    // student's backward pass, which inference tensors do not allow.
    torch::NoGradGuard no_grad;
    torch::Tensor logits = model_->forward(batch.inputs);
    return losses::TeacherTargets::DenseFromLogits(logits, temperature);
  });
}

TargetsFuture TeacherClient::Submit(const data::Batch& batch,
                                   double temperature) {
  std::promise<absl::StatusOr<losses::TeacherTargets>> done;
  done.set_value(Targets(batch, temperature));
  return done.get_future();
}

std::string InProcessTeacher::description() const {
  return absl::StrCat("in-process ", model_->model().description());
}

}  // namespace distill::trainer
