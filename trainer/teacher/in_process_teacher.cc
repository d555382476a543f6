#include "trainer/teacher/in_process_teacher.h"

#include <algorithm>

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
      TorchCall(
          absl::StrCat("running the ", role, " model '", model.description(),
                       "' on ", data.tokens ? "token windows " : "input ",
                       absl::StrJoin(shape, "x")),
          [&] {
            torch::NoGradGuard no_grad;
            model.train(false);
            torch::Tensor logits =
                model.forward(data.tokens ? torch::zeros(shape, torch::kLong)
                                          : torch::zeros(shape));
            model.train(true);
            return logits;
          }));
  // Images give [2, classes]; token windows [2, S, V].
  std::vector<int64_t> want = {2};
  if (data.tokens) want.push_back(data.input_shape[0]);
  const bool fits = out.dim() == static_cast<int64_t>(want.size()) + 1 &&
                    std::equal(want.begin(), want.end(), out.sizes().begin());
  if (!fits) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the ", role, " model '", model.description(), "' returns shape [",
        absl::StrJoin(out.sizes(), ", "), "] for ",
        data.tokens
            ? absl::StrCat("2 token windows of ", want[1], "; expected [2, ",
                           want[1], ", vocabulary]: a language model")
            : "a batch of 2; expected [2, classes]"));
  }
  const int64_t classes = out.size(out.dim() - 1);
  if (classes != data.num_classes) {
    return absl::FailedPreconditionError(absl::StrCat(
        role, " '", model.description(), "' outputs ", classes,
        data.tokens ? " token logits but the tokenizer's vocabulary has "
                    : " classes but the data has ",
        data.num_classes));
  }
  return classes;
}

absl::StatusOr<std::unique_ptr<InProcessTeacher>> InProcessTeacher::Create(
    const std::vector<TeacherMember>& members, const student::ZooInput& data) {
  if (members.empty()) {
    return absl::InvalidArgumentError("an in-process teacher needs a model");
  }
  std::vector<std::unique_ptr<student::InferenceModel>> prepared;
  for (size_t i = 0; i < members.size(); ++i) {
    const std::string role =
        members.size() == 1 ? "teacher"
                            : absl::StrCat("teacher (ensemble member ", i, ")");
    DISTILL_ASSIGN_OR_RETURN(auto model,
                             student::Model::Create(members[i].spec, data));
    if (!members[i].weights.empty()) {
      DISTILL_RETURN_IF_ERROR(
          Annotate(model->LoadFile(members[i].weights),
                   absl::StrCat("loading the ", role, "'s weights")));
    }
    // An error unless the member predicts data.num_classes classes.
    DISTILL_RETURN_IF_ERROR(ProbeNumClasses(*model, data, role).status());
    for (auto& p : model->parameters()) p.set_requires_grad(false);
    // The teacher never trains: run it prepared for inference (BatchNorm
    // folded, convs and linear layers on oneDNN), which is most of a
    // distillation step's time on a CPU.
    DISTILL_ASSIGN_OR_RETURN(auto ready,
                             student::InferenceModel::Create(std::move(model)));
    prepared.push_back(std::move(ready));
  }
  return std::unique_ptr<InProcessTeacher>(
      new InProcessTeacher(std::move(prepared), data.num_classes));
}

absl::StatusOr<losses::TeacherTargets> InProcessTeacher::Targets(
    const data::Batch& batch, double temperature) {
  return TorchCall("teacher forward", [&] {
    // NoGradGuard rather than InferenceMode: the targets are saved for the
    // student's backward pass, which inference tensors do not allow.
    torch::NoGradGuard no_grad;
    const torch::Tensor& ids = batch.teacher_indices;
    if (ids.defined() && models_.size() == 1) {
      return losses::TeacherTargets::AtIndices(
          models_.front()->forward(batch.inputs), temperature, ids);
    }
    losses::TeacherTargets targets = losses::TeacherTargets::DenseFromLogits(
        models_.front()->forward(batch.inputs), temperature);
    // An ensemble averages probabilities, not logits: each member's
    // distribution at T counts equally.
    for (size_t i = 1; i < models_.size(); ++i) {
      targets.probs =
          targets.probs + losses::TeacherTargets::DenseFromLogits(
                              models_[i]->forward(batch.inputs), temperature)
                              .probs;
    }
    if (models_.size() > 1) {
      targets.probs = targets.probs / static_cast<double>(models_.size());
    }
    if (ids.defined()) {  // an ensemble's mean distribution at the ids
      const torch::Tensor listed = ids.to(torch::kLong);
      targets.form = losses::TeacherTargets::Form::kTopK;
      targets.values = targets.probs.gather(-1, listed);
      targets.indices = listed;
      targets.tail_mass = targets.probs.scatter(-1, listed, 0.0).sum(-1);
      targets.probs = torch::Tensor();
    }
    return targets;
  });
}

std::string InProcessTeacher::description() const {
  if (models_.size() == 1) {
    return absl::StrCat("in-process ", models_.front()->model().description());
  }
  std::vector<std::string> names;
  for (const auto& m : models_) names.push_back(m->model().description());
  return absl::StrCat("in-process ensemble of ", models_.size(), " (",
                      absl::StrJoin(names, ", "), ")");
}

}  // namespace distill::trainer
