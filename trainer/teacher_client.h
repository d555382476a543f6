// Where the trainer gets teacher targets from. The training loop sees only
// TeacherClient, so the in-process teacher here and the gRPC client of the
// teacher servers are interchangeable (and a test can inject its own).
// A TeacherClient is used by one training loop at a time. Targets() is the
// synchronous call; Submit() lets the loop ask for the next batches' targets
// ahead of time (a remote teacher then works while the student steps).
#ifndef DISTILL_TRAINER_TEACHER_CLIENT_H_
#define DISTILL_TRAINER_TEACHER_CLIENT_H_

#include <future>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "data/dataset.h"
#include "losses/teacher_targets.h"
#include "student/inference.h"
#include "student/model.h"

namespace distill::trainer {

using TargetsFuture = std::future<absl::StatusOr<losses::TeacherTargets>>;

class TeacherClient {
 public:
  virtual ~TeacherClient() = default;
  // Soft targets softmax(z / temperature) for every sample of `batch`, in
  // the batch's order. `batch.inputs` are un-augmented or augmented inputs
  // exactly as the student sees them.
  virtual absl::StatusOr<losses::TeacherTargets> Targets(
      const data::Batch& batch, double temperature) = 0;
  // Starts on the targets of `batch` and returns their future; a future may
  // be dropped unread. Default: computes them now with Targets().
  virtual TargetsFuture Submit(const data::Batch& batch, double temperature);
  // True when Submit returns before the targets are ready, so submitting
  // ahead overlaps teacher work with the caller's. Default: false.
  virtual bool asynchronous() const { return false; }
  // Counters and latencies since the previous call, for metrics.jsonl
  // ("teacher_latency_ms_mean", ...). Default: none.
  virtual nlohmann::json TakeStats() { return nlohmann::json::object(); }
  // Called by the loop after every completed epoch (a cache persists
  // itself). Default: nothing.
  virtual absl::Status EpochDone() { return absl::OkStatus(); }
  // Classes the teacher predicts.
  virtual int64_t num_classes() const = 0;
  virtual std::string description() const = 0;
};

// One model of an in-process teacher: what to build and the weights to load
// (required for zoo models).
struct TeacherMember {
  student::ModelSpec spec;
  std::string weights;
};

// Runs a teacher model in this process, in eval mode without autograd. With
// several members it is an ensemble: the targets are the mean of the
// members' softmax(z / T).
class InProcessTeacher final : public TeacherClient {
 public:
  // Builds every member, loads its weights and checks its output against
  // the data: FailedPrecondition "teacher outputs N classes but the data
  // has M" on a mismatch, naming the member of an ensemble.
  // InvalidArgument when `members` is empty.
  static absl::StatusOr<std::unique_ptr<InProcessTeacher>> Create(
      const std::vector<TeacherMember>& members,
      const student::ZooInput& data);

  absl::StatusOr<losses::TeacherTargets> Targets(const data::Batch& batch,
                                                 double temperature) override;
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
// the model's class count; InvalidArgument when the output is not [1, C].
absl::StatusOr<int64_t> ProbeNumClasses(student::Model& model,
                                        const student::ZooInput& data,
                                        const std::string& role);

}  // namespace distill::trainer

#endif  // DISTILL_TRAINER_TEACHER_CLIENT_H_
