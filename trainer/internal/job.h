// A job assembled from its config before the first step: data, student,
// teacher, loss, optimizer and the ranks' communicator and gradient sync.
// Owned by RunJob for the length of the run; not thread-safe.
#ifndef DISTILL_TRAINER_INTERNAL_JOB_H_
#define DISTILL_TRAINER_INTERNAL_JOB_H_

#include <torch/torch.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "data/dataset.h"
#include "data/token_file.h"
#include "losses/composite.h"
#include "losses/schedule.h"
#include "student/model.h"
#include "student/zoo.h"
#include "trainer/config.h"
#include "trainer/dist/communicator.h"
#include "trainer/dist/grad_sync.h"
#include "trainer/dist/world.h"
#include "trainer/internal/on_policy.h"
#include "trainer/teacher/target_store.h"
#include "trainer/teacher/teacher_client.h"

namespace distill::trainer {

struct Job {
  JobConfig config;
  // Null in mode EVALUATE.
  std::unique_ptr<data::Dataset> train;
  std::unique_ptr<data::Dataset> test;
  // The validation split of token data (evaluated after each epoch, the
  // test split at the end); null for images, whose test split is evaluated
  // after each epoch.
  std::unique_ptr<data::Dataset> valid;
  // Token data: the tokenizer model its files were encoded with.
  std::string tokenizer;
  std::unique_ptr<student::Model> model;
  // Null without a teacher.
  std::shared_ptr<TeacherClient> teacher;
  // The rest are unset in mode EVALUATE.
  std::optional<losses::CompositeLoss> loss;
  // With `on_policy` in the config: the sampler and the loss of on-policy
  // steps (the terms of `loss` that read the teacher); unset otherwise.
  std::optional<losses::CompositeLoss> on_policy_loss;
  std::unique_ptr<OnPolicySampler> on_policy;
  std::unique_ptr<torch::optim::Optimizer> optimizer;
  std::unique_ptr<Communicator> comm;
  std::unique_ptr<GradSync> grad_sync;
};

// Builds everything `config` asks for on this rank of `world`: loads the
// data, the student (and its weights), connects or builds the teacher
// (`teacher`, when not null, replaces the config's), and for training
// modes the loss, the optimizer and the rendezvous with the other ranks.
// Every mismatch (a teacher's class count, a batch that does not split
// across the ranks, a student QAT cannot rewrite) is an error here, before
// any step.
absl::Status AssembleJob(const JobConfig& config, const WorldInfo& world,
                         std::shared_ptr<TeacherClient> teacher, Job& job);

// Sets LibTorch's thread count (config.threads; 0: one per core) and seeds
// its generator with config.seed, as every run of a job starts.
void UseConfiguredThreadsAndSeed(const JobConfig& config);

// FailedPrecondition "teacher '...' outputs N classes but the data has M".
absl::Status CheckTeacherClasses(const TeacherClient& teacher,
                                 int64_t num_classes);

// The job's teacher as its config describes it: the servers, or the model
// (and ensemble) run in this process; with `read_store` and
// teacher.store_dir set, the target store instead (which needs `train`,
// the training split). `test` gives a token job's tokenizer.
absl::StatusOr<std::shared_ptr<TeacherClient>> MakeJobTeacher(
    const JobConfig& config, const WorldInfo& world,
    const student::ZooInput& input, const data::Dataset& test,
    const data::Dataset* train, bool read_store);

// The key a target store must have to serve this token job, whose training
// split is `train` (trainer/target_store_job.cc). The teacher hash is that
// of teacher.model's file (and its ensemble's) when the config names one,
// else empty.
absl::StatusOr<TargetStoreKey> JobTargetStoreKey(const JobConfig& config,
                                                 const data::Dataset& train);

// The job's teacher.store_dir opened for `train`; FailedPrecondition naming
// the field that differs when it was written for another job.
absl::StatusOr<std::shared_ptr<TeacherClient>> OpenJobTargetStore(
    const JobConfig& config, const data::Dataset& train);

// The zoo arch or TorchScript file a model section names.
student::ModelSpec SpecOf(const v1::ModelConfig& model);

// One split of a "tokens" data folder: windows of data.seq_len + 1 tokens,
// with data.stride and data.train_limit for training, stride seq_len and
// data.test_limit otherwise. The token file's errors (NotFound, DataLoss),
// and FailedPrecondition when the file holds another split.
absl::StatusOr<std::unique_ptr<data::Dataset>> LoadTokenSplit(
    const JobConfig& config, data::TokenSplit split);

// The optimizer `config` describes over `params`.
absl::StatusOr<std::unique_ptr<torch::optim::Optimizer>> MakeOptimizer(
    const v1::OptimizerConfig& config, std::vector<torch::Tensor> params);

// A validated schedule of the config (its type is never UNSPECIFIED).
losses::ValueSchedule ScheduleFromProto(const v1::ValueSchedule& proto);

}  // namespace distill::trainer

#endif  // DISTILL_TRAINER_INTERNAL_JOB_H_
