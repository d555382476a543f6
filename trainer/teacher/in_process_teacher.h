// A teacher run in the trainer's own process: one model or an ensemble,
// prepared for inference (BatchNorm folded, oneDNN) and run in eval mode
// without autograd. Used by one training loop at a time, like any
// TeacherClient.
#ifndef DISTILL_TRAINER_TEACHER_IN_PROCESS_TEACHER_H_
#define DISTILL_TRAINER_TEACHER_IN_PROCESS_TEACHER_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "student/inference.h"
#include "student/model.h"
#include "student/zoo.h"
#include "trainer/teacher/teacher_client.h"

namespace distill::trainer {

// One model of an in-process teacher: what to build and the weights to load
// (required for zoo models).
struct TeacherMember {
  student::ModelSpec spec;
  std::string weights;
};

// With several members it is an ensemble: the targets are the mean of the
// members' softmax(z / T).
class InProcessTeacher final : public TeacherClient {
 public:
  // Builds every member, loads its weights and checks its output against
  // the data: FailedPrecondition "teacher outputs N classes but the data
  // has M" on a mismatch, naming the member of an ensemble.
  // InvalidArgument when `members` is empty.
  static absl::StatusOr<std::unique_ptr<InProcessTeacher>> Create(
      const std::vector<TeacherMember>& members, const student::ZooInput& data);

  absl::StatusOr<losses::TeacherTargets> Targets(const data::Batch& batch,
                                                 double temperature) override;
  bool scores_at_indices() const override { return true; }
  int64_t num_classes() const override { return num_classes_; }
  std::string description() const override;
  // How the forward runs (student::InferenceModel::how() of the first
  // member).
  const std::string& how() const { return models_.front()->how(); }

 private:
  InProcessTeacher(std::vector<std::unique_ptr<student::InferenceModel>> models,
                   int64_t num_classes)
      : models_(std::move(models)), num_classes_(num_classes) {}

  std::vector<std::unique_ptr<student::InferenceModel>> models_;
  int64_t num_classes_;
};

// Runs one eval-mode forward on a zero input of the data's shape and returns
// the model's class count (the vocabulary size for token windows);
// InvalidArgument when the output is not [2, C] (images) or [2, S, V]
// (tokens), FailedPrecondition naming `role` when C or V is not the data's.
absl::StatusOr<int64_t> ProbeNumClasses(student::Model& model,
                                        const student::ZooInput& data,
                                        const std::string& role);

}  // namespace distill::trainer

#endif  // DISTILL_TRAINER_TEACHER_IN_PROCESS_TEACHER_H_
