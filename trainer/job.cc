#include "trainer/internal/job.h"

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <string>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "common/torch_status.h"
#include "data/fashion_mnist.h"
#include "data/token_file.h"
#include "data/token_windows.h"
#include "losses/registry.h"
#include "trainer/internal/evaluate.h"
#include "trainer/internal/lm_text.h"
#include "trainer/internal/qat_stage.h"
#include "trainer/teacher/in_process_teacher.h"
#include "trainer/teacher/teacher_connect.h"

namespace distill::trainer {

using ::distill::v1::ModelConfig;
using ::distill::v1::OptimizerConfig;

absl::StatusOr<std::unique_ptr<data::Dataset>> LoadTokenSplit(
    const JobConfig& c, data::TokenSplit split) {
  const char* const names[] = {"train.tok", "valid.tok", "test.tok"};
  const std::string path =
      (std::filesystem::path(c.data().dir()) / names[static_cast<int>(split)])
          .string();
  DISTILL_ASSIGN_OR_RETURN(std::shared_ptr<const data::TokenFile> file,
                           data::TokenFile::Open(path));
  if (file->info().split != split) {
    return absl::FailedPreconditionError(absl::StrCat(
        path, " holds the ", data::TokenSplitName(file->info().split),
        " split, not the ", data::TokenSplitName(split), " split"));
  }
  data::TokenWindowOptions options;
  options.seq_len = c.data().seq_len();
  const bool train = split == data::TokenSplit::kTrain;
  options.stride = train ? c.data().stride() : c.data().seq_len();
  options.limit = train ? c.data().train_limit() : c.data().test_limit();
  DISTILL_ASSIGN_OR_RETURN(std::unique_ptr<data::TokenWindows> windows,
                           data::TokenWindows::Create(file, options));
  return std::unique_ptr<data::Dataset>(std::move(windows));
}

namespace {

// The token files of one folder must come from one tokenizer.
absl::Status CheckSameTokenizer(const data::Dataset& a,
                                const data::Dataset& b) {
  const auto& fa = static_cast<const data::TokenWindows&>(a).file();
  const auto& fb = static_cast<const data::TokenWindows&>(b).file();
  if (fa.info().vocab_size != fb.info().vocab_size ||
      fa.info().tokenizer_sha256 != fb.info().tokenizer_sha256) {
    return absl::FailedPreconditionError(absl::StrCat(
        fa.path(), " (vocabulary ", fa.info().vocab_size, ", tokenizer ",
        fa.info().tokenizer_sha256.substr(0, 12), ") and ", fb.path(),
        " (vocabulary ", fb.info().vocab_size, ", tokenizer ",
        fb.info().tokenizer_sha256.substr(0, 12),
        ") come from different tokenizers; prepare them together with "
        "distill_prepare_text"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<data::Dataset>> LoadSplit(const JobConfig& c,
                                                         bool train) {
  if (c.data().dataset() == "tokens") {
    return LoadTokenSplit(
        c, train ? data::TokenSplit::kTrain : data::TokenSplit::kTest);
  }
  data::FashionMnistOptions options;
  options.dir = c.data().dir();
  options.train = train;
  options.limit = train ? c.data().train_limit() : c.data().test_limit();
  return data::LoadFashionMnist(options);
}

}  // namespace

absl::StatusOr<std::shared_ptr<TeacherClient>> MakeJobTeacher(
    const JobConfig& config, const WorldInfo& world,
    const student::ZooInput& input, const data::Dataset& test,
    const data::Dataset* train, bool read_store) {
  if (read_store && !config.teacher().store_dir().empty()) {
    if (train == nullptr) {
      return absl::InvalidArgumentError(
          "a target store serves training windows; this mode has none");
    }
    return OpenJobTargetStore(config, *train);
  }
  if (IsRemoteTeacher(config.teacher())) {
    const std::string tokenizer =
        input.tokens ? static_cast<const data::TokenWindows&>(test)
                           .file()
                           .info()
                           .tokenizer_sha256
                     : std::string();
    // The largest batch it is sent: a rank's share of a training batch, or
    // a language model's evaluation batch.
    int64_t batch_rows = config.batch_size() / world.world_size;
    if (input.tokens) {
      batch_rows = std::max(batch_rows, LmEvalWindows(config.data().seq_len()));
    }
    return ConnectRemoteTeacher(config, input, tokenizer, batch_rows,
                                train != nullptr ? train->size() : 0,
                                world.rank);
  }
  std::vector<TeacherMember> members = {
      {SpecOf(config.teacher().model()), config.teacher().model().weights()}};
  for (const ModelConfig& m : config.teacher().ensemble()) {
    members.push_back({SpecOf(m), m.weights()});
  }
  DISTILL_ASSIGN_OR_RETURN(std::unique_ptr<InProcessTeacher> teacher,
                           InProcessTeacher::Create(members, input));
  return std::shared_ptr<TeacherClient>(std::move(teacher));
}

student::ModelSpec SpecOf(const ModelConfig& m) {
  student::ModelSpec spec;
  spec.arch = m.arch();
  spec.torchscript = m.torchscript();
  spec.options.insert(m.options().begin(), m.options().end());
  return spec;
}

absl::StatusOr<std::unique_ptr<torch::optim::Optimizer>> MakeOptimizer(
    const OptimizerConfig& c, std::vector<torch::Tensor> params) {
  return TorchCall("creating the optimizer",
                   [&]() -> std::unique_ptr<torch::optim::Optimizer> {
                     switch (c.type()) {
                       case OptimizerConfig::ADAM:
                         return std::make_unique<torch::optim::Adam>(
                             params, torch::optim::AdamOptions(c.lr())
                                         .betas({c.beta1(), c.beta2()})
                                         .eps(c.eps())
                                         .weight_decay(c.weight_decay()));
                       case OptimizerConfig::ADAMW:
                         return std::make_unique<torch::optim::AdamW>(
                             params, torch::optim::AdamWOptions(c.lr())
                                         .betas({c.beta1(), c.beta2()})
                                         .eps(c.eps())
                                         .weight_decay(c.weight_decay()));
                       default:
                         return std::make_unique<torch::optim::SGD>(
                             params, torch::optim::SGDOptions(c.lr())
                                         .momentum(c.momentum())
                                         .nesterov(c.nesterov())
                                         .weight_decay(c.weight_decay()));
                     }
                   });
}

losses::ValueSchedule ScheduleFromProto(const v1::ValueSchedule& proto) {
  losses::ValueSchedule schedule;
  schedule.type = proto.type() == v1::ValueSchedule::LINEAR
                      ? losses::ValueSchedule::Type::kLinear
                  : proto.type() == v1::ValueSchedule::COSINE
                      ? losses::ValueSchedule::Type::kCosine
                      : losses::ValueSchedule::Type::kConstant;
  schedule.start = proto.start();
  schedule.end = proto.end();
  return schedule;
}

void UseConfiguredThreadsAndSeed(const JobConfig& config) {
  // LibTorch's own default follows OMP_NUM_THREADS and can be 1 even on a
  // multi-core machine; 0 in the config means one thread per core.
  const unsigned cores = std::max(1u, std::thread::hardware_concurrency());
  torch::set_num_threads(config.threads() > 0 ? config.threads()
                                              : static_cast<int>(cores));
  torch::manual_seed(config.seed());
}

absl::Status CheckTeacherClasses(const TeacherClient& teacher,
                                 int64_t num_classes) {
  if (teacher.num_classes() == num_classes) return absl::OkStatus();
  return absl::FailedPreconditionError(absl::StrCat(
      "teacher '", teacher.description(), "' outputs ", teacher.num_classes(),
      " classes but the data has ", num_classes));
}

absl::Status AssembleJob(const JobConfig& config, const WorldInfo& world,
                         std::shared_ptr<TeacherClient> teacher, Job& job) {
  job.config = config;
  UseConfiguredThreadsAndSeed(config);

  if ((config.mode() == JobConfig::EVALUATE ||
       config.mode() == JobConfig::QUANTIZE) &&
      world.world_size > 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("mode ", JobConfig::Mode_Name(config.mode()),
                     " runs in one process; start it without RANK/WORLD_SIZE"));
  }
  if (config.batch_size() % world.world_size != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "batch_size ", config.batch_size(), " does not split evenly across ",
        world.world_size, " ranks"));
  }
  if (config.mode() != JobConfig::EVALUATE) {
    DISTILL_ASSIGN_OR_RETURN(job.train, LoadSplit(config, true));
  }
  DISTILL_ASSIGN_OR_RETURN(job.test, LoadSplit(config, false));
  const bool tokens = config.data().dataset() == "tokens";
  if (tokens) {
    DISTILL_ASSIGN_OR_RETURN(job.valid,
                             LoadTokenSplit(config, data::TokenSplit::kValid));
    DISTILL_RETURN_IF_ERROR(CheckSameTokenizer(*job.test, *job.valid));
    DISTILL_ASSIGN_OR_RETURN(job.tokenizer,
                             JobTokenizer(config.data().dir(), *job.test));
    if (job.train != nullptr) {
      DISTILL_RETURN_IF_ERROR(CheckSameTokenizer(*job.train, *job.test));
    }
  }
  const student::ZooInput input{job.test->input_shape(),
                                job.test->num_classes(), tokens};

  DISTILL_ASSIGN_OR_RETURN(
      job.model, student::Model::Create(SpecOf(config.student()), input));
  if (!config.student().weights().empty()) {
    DISTILL_RETURN_IF_ERROR(
        Annotate(job.model->LoadFile(config.student().weights()),
                 "loading student.weights"));
  }
  DISTILL_RETURN_IF_ERROR(
      ProbeNumClasses(*job.model, input, "student").status());
  if (config.has_qat()) {
    DISTILL_RETURN_IF_ERROR(CheckQatSupported(config, *job.model));
  }

  if (HasTeacher(config)) {
    if (teacher != nullptr) {
      job.teacher = std::move(teacher);
    } else {
      DISTILL_ASSIGN_OR_RETURN(
          job.teacher, MakeJobTeacher(config, world, input, *job.test,
                                      job.train.get(), /*read_store=*/true));
    }
    DISTILL_RETURN_IF_ERROR(
        CheckTeacherClasses(*job.teacher, input.num_classes));
  }
  if (config.mode() == JobConfig::EVALUATE) return absl::OkStatus();

  std::vector<losses::TermSpec> terms;
  for (const auto& t : config.loss()) {
    terms.push_back({t.name(), t.weight(),
                     losses::LossParams(t.params().begin(), t.params().end())});
    if (t.has_weight_schedule()) {
      terms.back().weight_schedule = ScheduleFromProto(t.weight_schedule());
    }
  }
  DISTILL_ASSIGN_OR_RETURN(job.loss, losses::CompositeLoss::Create(terms));
  if (config.has_on_policy()) {
    if (config.on_policy().student_top_k() > job.test->num_classes()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "on_policy.student_top_k ", config.on_policy().student_top_k(),
          " is more than the data's vocabulary of ", job.test->num_classes(),
          " tokens"));
    }
    std::vector<losses::TermSpec> scored;
    for (const auto& term : terms) {
      DISTILL_ASSIGN_OR_RETURN(const losses::LossEntry entry,
                               losses::LossRegistry::Global().Find(term.name));
      if (entry.needs_teacher) scored.push_back(term);
    }
    DISTILL_ASSIGN_OR_RETURN(job.on_policy_loss,
                             losses::CompositeLoss::Create(scored));
  }
  DISTILL_ASSIGN_OR_RETURN(
      job.optimizer,
      MakeOptimizer(config.optimizer(), job.model->parameters()));

  CommunicatorOptions comm_options;
  comm_options.backend = config.distributed().backend();
  comm_options.timeout = std::chrono::milliseconds(static_cast<int64_t>(
      1000 * config.distributed().collective_timeout_seconds()));
  DISTILL_ASSIGN_OR_RETURN(job.comm, CreateCommunicator(world, comm_options));
  GradSyncOptions sync_options;
  sync_options.first_bucket_bytes =
      static_cast<int64_t>(config.distributed().first_bucket_mb() * (1 << 20));
  sync_options.bucket_cap_bytes =
      static_cast<int64_t>(config.distributed().bucket_cap_mb() * (1 << 20));
  sync_options.overlap = config.distributed().overlap();
  DISTILL_ASSIGN_OR_RETURN(
      job.grad_sync,
      GradSync::Create(*job.comm, job.model->named_parameters(), sync_options));
  if (config.has_on_policy()) {
    job.on_policy = std::make_unique<OnPolicySampler>(
        *job.model, OnPolicyOptionsFor(config, job.comm->rank()));
  }
  return absl::OkStatus();
}

}  // namespace distill::trainer
