// Where the trainer gets teacher targets from. The training loop sees only
// TeacherClient, so the in-process teacher here and the gRPC client of the
// teacher servers are interchangeable (and a test can inject its own).
// A TeacherClient is used by one training loop at a time.
#ifndef DISTILL_TRAINER_TEACHER_CLIENT_H_
#define DISTILL_TRAINER_TEACHER_CLIENT_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "data/dataset.h"
#include "losses/teacher_targets.h"
#include "student/model.h"

namespace distill::trainer {

class TeacherClient {
 public:
  virtual ~TeacherClient() = default;
  // Soft targets softmax(z / temperature) for every sample of `batch`, in
  // the batch's order. `batch.inputs` are un-augmented or augmented inputs
  // exactly as the student sees them.
  virtual absl::StatusOr<losses::TeacherTargets> Targets(
      const data::Batch& batch, double temperature) = 0;
  // Classes the teacher predicts.
  virtual int64_t num_classes() const = 0;
  virtual std::string description() const = 0;
};

// Runs a teacher model in this process, in eval mode without autograd.
class InProcessTeacher final : public TeacherClient {
 public:
  // Builds the model, loads `weights` (required for zoo models) and checks
  // its output against the data: FailedPrecondition "teacher outputs N
  // classes but the data has M" on a mismatch.
  static absl::StatusOr<std::unique_ptr<InProcessTeacher>> Create(
      const student::ModelSpec& spec, const std::string& weights,
      const student::ZooInput& data);

  absl::StatusOr<losses::TeacherTargets> Targets(const data::Batch& batch,
                                                 double temperature) override;
  int64_t num_classes() const override { return num_classes_; }
  std::string description() const override;
  student::Model& model() { return *model_; }

 private:
  InProcessTeacher(std::unique_ptr<student::Model> model, int64_t num_classes)
      : model_(std::move(model)), num_classes_(num_classes) {}

  std::unique_ptr<student::Model> model_;
  int64_t num_classes_;
};

// Runs one eval-mode forward on a zero input of the data's shape and returns
// the model's class count; InvalidArgument when the output is not [1, C].
absl::StatusOr<int64_t> ProbeNumClasses(student::Model& model,
                                        const student::ZooInput& data,
                                        const std::string& role);

}  // namespace distill::trainer

#endif  // DISTILL_TRAINER_TEACHER_CLIENT_H_
