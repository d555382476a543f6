#include "losses/builtin_common.h"

#include <cmath>
#include <cstdint>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/labels.h"
#include "common/temperature.h"
#include "common/torch_status.h"
#include "losses/teacher_targets.h"

namespace distill::losses::internal {

std::string ShapeString(torch::IntArrayRef shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

torch::IntArrayRef LeadingShape(const torch::Tensor& logits) {
  return logits.sizes().slice(0, logits.dim() - 1);
}

absl::Status CheckStudent(const std::string& loss,
                          const torch::Tensor& logits) {
  if (!logits.defined()) {
    return absl::InvalidArgumentError(
        absl::StrCat(loss, ": student logits are missing"));
  }
  if (logits.dim() < 2 || logits.dim() > 3 || logits.numel() == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(loss, ": student logits must be a non-empty [N, C] or ",
                     "[N, S, V] tensor, got ", ShapeString(logits.sizes())));
  }
  if (!logits.is_floating_point()) {
    return absl::InvalidArgumentError(
        absl::StrCat(loss, ": student logits must be floating point, got ",
                     c10::toString(logits.scalar_type())));
  }
  return absl::OkStatus();
}

absl::Status CheckTeacher(const std::string& loss, const LossInputs& inputs) {
  const TeacherTargets* teacher = inputs.teacher;
  if (teacher == nullptr) {
    return absl::FailedPreconditionError(
        absl::StrCat(loss, " needs teacher targets but none were given"));
  }
  if (!(teacher->temperature >= kMinTemperature) ||
      !std::isfinite(teacher->temperature)) {
    return absl::InvalidArgumentError(absl::StrCat(
        loss, ": teacher temperature must be finite and >= ", kMinTemperature,
        ", got ", teacher->temperature));
  }
  const torch::Tensor& student = inputs.student_logits;
  const int64_t classes = student.size(-1);
  if (teacher->num_classes != classes) {
    return absl::InvalidArgumentError(
        absl::StrCat(loss, ": teacher targets have ", teacher->num_classes,
                     " classes but student logits ",
                     ShapeString(student.sizes()), " have ", classes));
  }
  const bool dense = teacher->form == TeacherTargets::Form::kDense;
  const torch::Tensor& main = dense ? teacher->probs : teacher->values;
  if (!main.defined() || (!dense && (!teacher->indices.defined() ||
                                     !teacher->tail_mass.defined()))) {
    return absl::InvalidArgumentError(
        absl::StrCat(loss, ": ", FormName(teacher->form),
                     " teacher targets are missing a tensor"));
  }
  if (main.dim() != student.dim()) {
    return absl::InvalidArgumentError(absl::StrCat(
        loss, ": teacher targets ", ShapeString(main.sizes()),
        " do not match student logits ", ShapeString(student.sizes())));
  }
  if (teacher->batch_shape() != LeadingShape(student)) {
    return absl::InvalidArgumentError(
        absl::StrCat(loss, ": teacher targets cover batch shape ",
                     ShapeString(teacher->batch_shape()),
                     " but student logits are ", ShapeString(student.sizes())));
  }
  if (dense) {
    if (main.size(-1) != classes) {
      return absl::InvalidArgumentError(absl::StrCat(
          loss, ": teacher probabilities ", ShapeString(main.sizes()),
          " do not match student logits ", ShapeString(student.sizes())));
    }
  } else {
    // Sampled rows list up to m ids, which may exceed the class count.
    const int64_t k = main.size(-1);
    const bool sampled = teacher->form == TeacherTargets::Form::kSampled;
    if (k < 1 || (!sampled && k > classes) ||
        teacher->indices.sizes() != main.sizes() ||
        teacher->tail_mass.sizes() != LeadingShape(main)) {
      return absl::InvalidArgumentError(absl::StrCat(
          loss, ": ", FormName(teacher->form), " teacher targets with values ",
          ShapeString(main.sizes()), ", indices ",
          ShapeString(teacher->indices.sizes()), " and tail ",
          ShapeString(teacher->tail_mass.sizes()),
          " do not fit student logits ", ShapeString(student.sizes())));
    }
  }
  return absl::OkStatus();
}

absl::Status CheckLabels(const std::string& loss, const LossInputs& inputs) {
  const torch::Tensor& labels = inputs.labels;
  const torch::Tensor& student = inputs.student_logits;
  if (!labels.defined()) {
    return absl::InvalidArgumentError(
        absl::StrCat(loss, " needs labels but none were given"));
  }
  if (labels.sizes() != LeadingShape(student)) {
    return absl::InvalidArgumentError(absl::StrCat(
        loss, ": labels ", ShapeString(labels.sizes()),
        " do not match student logits ", ShapeString(student.sizes())));
  }
  if (labels.is_floating_point() || labels.is_complex() ||
      labels.scalar_type() == torch::kBool) {
    return absl::InvalidArgumentError(
        absl::StrCat(loss, ": labels must be integers, got ",
                     c10::toString(labels.scalar_type())));
  }
  return TorchCall(
      absl::StrCat(loss, ": checking labels"), [&]() -> absl::Status {
        const torch::Tensor counted =
            labels.masked_select(labels != kIgnoreLabel);
        if (counted.numel() == 0) return absl::OkStatus();
        const int64_t lo = counted.min().item<int64_t>();
        const int64_t hi = counted.max().item<int64_t>();
        if (lo < 0 || hi >= student.size(-1)) {
          return absl::InvalidArgumentError(absl::StrCat(
              loss, ": labels span [", lo, ", ", hi, "] but student logits ",
              ShapeString(student.sizes()), " have ", student.size(-1),
              " classes"));
        }
        return absl::OkStatus();
      });
}

torch::Tensor MeanOverTargets(const torch::Tensor& per_row,
                              const LossInputs& inputs) {
  const torch::Tensor& labels = inputs.labels;
  if (!labels.defined() || labels.numel() != per_row.numel()) {
    return per_row.mean();
  }
  const torch::Tensor keep =
      (labels.reshape({-1}) != kIgnoreLabel).to(per_row.device());
  const torch::Tensor count = keep.sum().clamp_min(1).to(per_row.dtype());
  return torch::where(keep, per_row, torch::zeros_like(per_row)).sum() / count;
}

torch::Tensor FlatLogits(const torch::Tensor& logits) {
  const torch::Tensor flat = logits.reshape({-1, logits.size(-1)});
  if (flat.scalar_type() == torch::kDouble) return flat;
  return flat.to(torch::kFloat);
}

}  // namespace distill::losses::internal
