#include "trainer/trainer.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <map>
#include <optional>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/status.h"
#include "common/torch_status.h"
#include "data/fashion_mnist.h"
#include "data/loader.h"
#include "data/sampler.h"
#include "losses/composite.h"
#include "losses/schedule.h"
#include "trainer/checkpoint.h"
#include "trainer/communicator.h"
#include "trainer/evaluate.h"
#include "trainer/grad_sync.h"
#include "trainer/lr_schedule.h"
#include "trainer/metrics.h"
#include "trainer/qat_stage.h"
#include "trainer/teacher_connect.h"
#include "trainer/teacher_prefetch.h"

namespace distill::trainer {
namespace {

using Clock = std::chrono::steady_clock;
using ::distill::v1::ModelConfig;
using ::distill::v1::OptimizerConfig;

double SecondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
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

void SetLearningRate(torch::optim::Optimizer& optimizer, double lr) {
  for (auto& group : optimizer.param_groups()) group.options().set_lr(lr);
}

// The config validated the type: UNSPECIFIED does not reach here.
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

std::string TermsString(const std::map<std::string, double>& terms) {
  std::string out;
  for (const auto& [name, value] : terms) {
    absl::StrAppendFormat(&out, "%s%s %.4f", out.empty() ? "" : " ", name,
                          value);
  }
  return out;
}

// Wall seconds an epoch spent in each phase of its steps, for the profile in
// metrics.jsonl (bench/ prints it). On the CPU every op is synchronous, so
// the clock between phases is the phase's own cost.
struct StepProfile {
  double data = 0;       // waiting for the loader's next batch
  double teacher = 0;    // teacher targets (in-process forward or remote wait)
  double forward = 0;    // student forward and loss terms
  double backward = 0;   // autograd backward (hooks start bucket all-reduces)
  double sync = 0;       // finishing gradient sync, broadcasting buffers
  double optimizer = 0;  // gradient clipping and the optimizer step

  nlohmann::json ToJson() const {
    return {{"data", data},         {"teacher", teacher},
            {"forward", forward},   {"backward", backward},
            {"sync", sync},         {"optimizer", optimizer}};
  }
};

// Everything a run builds from its config before the first step.
struct Job {
  JobConfig config;
  std::unique_ptr<data::Dataset> train;
  std::unique_ptr<data::Dataset> test;
  std::unique_ptr<student::Model> model;
  std::shared_ptr<TeacherClient> teacher;
  std::optional<losses::CompositeLoss> loss;
  std::unique_ptr<torch::optim::Optimizer> optimizer;
  std::unique_ptr<Communicator> comm;
  std::unique_ptr<GradSync> grad_sync;
};

absl::StatusOr<std::unique_ptr<data::Dataset>> LoadSplit(const JobConfig& c,
                                                         bool train) {
  data::FashionMnistOptions options;
  options.dir = c.data().dir();
  options.train = train;
  options.limit = train ? c.data().train_limit() : c.data().test_limit();
  return data::LoadFashionMnist(options);
}

absl::Status BuildJob(const JobConfig& config, const RunOptions& options,
                      Job& job) {
  job.config = config;
  // LibTorch's own default follows OMP_NUM_THREADS and can be 1 even on a
  // multi-core machine; 0 in the config means one thread per core.
  const unsigned cores = std::max(1u, std::thread::hardware_concurrency());
  torch::set_num_threads(config.threads() > 0 ? config.threads()
                                              : static_cast<int>(cores));
  torch::manual_seed(config.seed());

  const WorldInfo& world = options.world;
  if ((config.mode() == JobConfig::EVALUATE ||
       config.mode() == JobConfig::QUANTIZE) &&
      world.world_size > 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "mode ", JobConfig::Mode_Name(config.mode()),
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
  const student::ZooInput input{job.test->input_shape(),
                                job.test->num_classes()};

  DISTILL_ASSIGN_OR_RETURN(job.model,
                           student::Model::Create(SpecOf(config.student()), input));
  if (!config.student().weights().empty()) {
    DISTILL_RETURN_IF_ERROR(Annotate(job.model->LoadFile(config.student().weights()),
                                     "loading student.weights"));
  }
  DISTILL_RETURN_IF_ERROR(ProbeNumClasses(*job.model, input, "student").status());
  if (config.has_qat()) {
    DISTILL_RETURN_IF_ERROR(CheckQatSupported(config, *job.model));
  }

  if (config.mode() == JobConfig::DISTILL ||
      (config.mode() == JobConfig::QUANTIZE && config.has_teacher())) {
    if (options.teacher) {
      job.teacher = options.teacher;
    } else if (IsRemoteTeacher(config.teacher())) {
      DISTILL_ASSIGN_OR_RETURN(
          job.teacher,
          ConnectRemoteTeacher(config, input,
                               config.batch_size() / world.world_size,
                               job.train->size(), world.rank));
    } else {
      std::vector<TeacherMember> members = {
          {SpecOf(config.teacher().model()), config.teacher().model().weights()}};
      for (const ModelConfig& m : config.teacher().ensemble()) {
        members.push_back({SpecOf(m), m.weights()});
      }
      DISTILL_ASSIGN_OR_RETURN(job.teacher,
                               InProcessTeacher::Create(members, input));
    }
    if (job.teacher->num_classes() != input.num_classes) {
      return absl::FailedPreconditionError(absl::StrCat(
          "teacher '", job.teacher->description(), "' outputs ",
          job.teacher->num_classes(), " classes but the data has ",
          input.num_classes));
    }
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
  DISTILL_ASSIGN_OR_RETURN(job.optimizer,
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
  return absl::OkStatus();
}

nlohmann::json BaseSummary(Job& job) {
  const auto& c = job.config;
  nlohmann::json s = {
      {"name", c.name()},
      {"mode", JobConfig::Mode_Name(c.mode())},
      {"model", job.model->description()},
      {"params", job.model->num_parameters()},
      {"epochs", c.epochs()},
      {"batch_size", c.batch_size()},
      {"seed", c.seed()},
  };
  if (job.teacher) s["teacher"] = job.teacher->description();
  if (c.mode() == JobConfig::DISTILL) s["temperature"] = c.temperature();
  return s;
}

absl::StatusOr<RunResult> Evaluation(Job& job) {
  DISTILL_ASSIGN_OR_RETURN(EvalResult eval,
                           Evaluate(*job.model, *job.test, 512, false));
  RunResult result;
  result.summary = BaseSummary(job);
  result.summary.update(eval.ToJson());
  std::filesystem::create_directories(job.config.run_dir());
  DISTILL_RETURN_IF_ERROR(WriteJsonFile(
      (std::filesystem::path(job.config.run_dir()) / "summary.json").string(),
      result.summary));
  return result;
}

// One optimizer step on this rank's batch: micro-batches accumulate
// gradients, the last one's backward synchronizes them across ranks.
absl::StatusOr<losses::CompositeResult> Step(
    Job& job, const data::Batch& batch,
    const std::optional<losses::TeacherTargets>& targets, double lr,
    int64_t step, int64_t epoch, int64_t total_steps, StepProfile& profile) {
  const JobConfig& c = job.config;
  losses::CompositeResult result;
  DISTILL_RETURN_IF_ERROR(TorchCall(
      absl::StrCat("training step ", step + 1), [&]() -> absl::Status {
        SetLearningRate(*job.optimizer, lr);
        job.optimizer->zero_grad();
        const int64_t n = batch.labels.size(0);
        const int64_t parts = std::min<int64_t>(c.micro_batches(), n);
        double total = 0;
        for (int64_t k = 0; k < parts; ++k) {
          // Strided like the rank shards: one rank with k micro-batches
          // sees the same BatchNorm batches as k ranks with one each.
          const torch::Tensor rows = torch::arange(k, n, parts);
          const double share = static_cast<double>(rows.size(0)) / n;
          std::optional<losses::TeacherTargets> part_targets;
          if (targets) {
            part_targets = parts == 1 ? *targets : targets->Rows(rows);
          }
          auto phase_start = Clock::now();
          losses::LossInputs in;
          in.student_logits = job.model->forward(
              parts == 1 ? batch.inputs : batch.inputs.index_select(0, rows));
          in.teacher = part_targets ? &*part_targets : nullptr;
          in.labels = parts == 1 ? batch.labels : batch.labels.index_select(0, rows);
          in.step = step;
          in.epoch = epoch;
          in.total_steps = total_steps;
          DISTILL_ASSIGN_OR_RETURN(losses::CompositeResult part,
                                   job.loss->Compute(in));
          profile.forward += SecondsSince(phase_start);
          phase_start = Clock::now();
          job.grad_sync->BeginBackward(/*sync=*/k + 1 == parts, step);
          (part.total * share).backward();
          profile.backward += SecondsSince(phase_start);
          phase_start = Clock::now();
          DISTILL_RETURN_IF_ERROR(job.grad_sync->FinishBackward());
          profile.sync += SecondsSince(phase_start);
          total += part.total.item<double>() * share;
          for (const auto& [name, v] : part.terms) result.terms[name] += v * share;
        }
        result.total = torch::tensor(total);
        const auto optimizer_start = Clock::now();
        if (c.grad_clip_norm() > 0) {
          torch::nn::utils::clip_grad_norm_(job.model->parameters(),
                                            c.grad_clip_norm());
        }
        job.optimizer->step();
        profile.optimizer += SecondsSince(optimizer_start);
        return absl::OkStatus();
      }));
  return result;
}

absl::StatusOr<RunResult> Train(Job& job, const RunOptions& options) {
  const JobConfig& c = job.config;
  const std::string& run_dir = c.run_dir();
  Communicator& comm = *job.comm;
  const int world = comm.world_size();
  const bool leader = comm.rank() == 0;
  const bool verbose = options.verbose && leader;
  MetricsWriter metrics;
  if (leader) DISTILL_RETURN_IF_ERROR(metrics.Open(run_dir));

  TrainPosition pos;
  if (options.resume) {
    if (auto latest = FindLatestCheckpoint(run_dir)) {
      DISTILL_ASSIGN_OR_RETURN(pos,
                               LoadCheckpoint(*latest, *job.model, *job.optimizer));
      if (verbose) {
        std::printf("resuming from %s (epoch %lld, step %lld)\n", latest->c_str(),
                    static_cast<long long>(pos.epoch + 1),
                    static_cast<long long>(pos.global_step));
      }
    } else if (verbose) {
      std::printf("no checkpoint in %s; starting from the beginning\n",
                  run_dir.c_str());
    }
  }
  if (pos.cursor % world != 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "the checkpoint stopped after ", pos.cursor,
        " samples of its epoch, which does not split across ", world,
        " ranks; resume with a number of ranks that divides it"));
  }
  // Every rank starts from rank 0's weights, whatever it initialized.
  auto state = job.model->named_parameters();
  for (auto& b : job.model->named_buffers()) state.push_back(b);
  DISTILL_RETURN_IF_ERROR(
      job.grad_sync->BroadcastFromRankZero(state, "broadcast of initial weights"));
  const auto buffers = job.model->named_buffers();

  data::SamplerOptions sampler_options;
  sampler_options.seed = c.seed();
  sampler_options.rank = comm.rank();
  sampler_options.world_size = world;
  sampler_options.drop_last = c.data().drop_last();
  data::Sampler sampler(job.train->size(), sampler_options);
  const int64_t shard = sampler.shard_size();
  const int64_t rank_batch = c.batch_size() / world;
  const int64_t steps_per_epoch = c.data().drop_last_batch()
                                      ? shard / rank_batch
                                      : (shard + rank_batch - 1) / rank_batch;
  if (steps_per_epoch == 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "batch_size ", c.batch_size(), " is larger than the ", shard * world,
        " training samples and data.drop_last_batch is set: no step to take"));
  }
  const int64_t total_steps = steps_per_epoch * c.epochs();
  const std::optional<losses::ValueSchedule> temperature_schedule =
      c.has_temperature_schedule()
          ? std::optional(ScheduleFromProto(c.temperature_schedule()))
          : std::nullopt;

  if (verbose) {
    std::printf("%s: %s, %lld parameters, %lld training samples, %s%d epochs%s\n",
                JobConfig::Mode_Name(c.mode()).c_str(),
                job.model->description().c_str(),
                static_cast<long long>(job.model->num_parameters()),
                static_cast<long long>(job.train->size()),
                job.teacher ? ("teacher " + job.teacher->description() + ", ").c_str()
                            : "",
                c.epochs(),
                world > 1 ? absl::StrFormat(", %d ranks (%s, %d gradient buckets)",
                                            world, comm.backend(),
                                            job.grad_sync->num_buckets())
                                .c_str()
                          : "");
    std::fflush(stdout);
  }

  auto save = [&](const TrainPosition& at) -> absl::StatusOr<std::string> {
    if (!leader) return std::string();
    return SaveCheckpoint(run_dir, *job.model, *job.optimizer, at,
                          c.keep_checkpoints());
  };

  RunResult result;
  double train_seconds = 0;
  int64_t trained_samples = 0;
  std::map<std::string, double> last_epoch_terms;
  nlohmann::json last_eval;
  job.model->train(true);

  for (int64_t epoch = pos.epoch; epoch < c.epochs(); ++epoch) {
    sampler.SetEpoch(epoch);
    if (epoch == pos.epoch && pos.cursor > 0) {
      DISTILL_RETURN_IF_ERROR(sampler.SetCursor(pos.cursor / world));
    }
    data::LoaderOptions loader_options;
    loader_options.batch_size = rank_batch;
    loader_options.queue_depth = c.data().loader_queue_depth();
    loader_options.drop_last_batch = c.data().drop_last_batch();
    loader_options.augment.enabled = c.data().augment().enabled();
    loader_options.augment.crop_padding = c.data().augment().crop_padding();
    loader_options.augment.horizontal_flip = c.data().augment().horizontal_flip();
    loader_options.seed = c.seed();
    loader_options.epoch = epoch;
    data::Loader loader(*job.train, sampler.Remaining(), loader_options);

    // Teacher targets are asked for ahead of the step that needs them
    // (when the teacher answers asynchronously); the schedule gives the
    // temperature of a future step.
    TargetPrefetcher prefetcher(
        loader, job.teacher.get(),
        job.teacher && job.teacher->asynchronous() ? c.teacher().prefetch_batches()
                                                   : 0,
        [&, first = pos.global_step](int64_t i) {
          return temperature_schedule
                     ? temperature_schedule->At(first + i, total_steps)
                     : c.temperature();
        });

    std::map<std::string, double> term_sums;
    double loss_sum = 0;
    int64_t epoch_samples = 0;
    StepProfile profile;
    const auto epoch_start = Clock::now();
    while (true) {
      auto phase_start = Clock::now();
      const double teacher_before = prefetcher.teacher_seconds();
      absl::StatusOr<std::optional<TargetPrefetcher::Item>> item =
          prefetcher.Next();
      // Next() reads the loader and waits for (or, in process, computes)
      // the teacher's targets; the prefetcher says which share was which.
      const double teacher_seconds = prefetcher.teacher_seconds() - teacher_before;
      profile.teacher += teacher_seconds;
      profile.data += SecondsSince(phase_start) - teacher_seconds;
      if (!item.ok() && prefetcher.teacher_failed()) {
        // Keep what was trained: the teacher may be back for --resume.
        DISTILL_ASSIGN_OR_RETURN(std::string saved, save(pos));
        return absl::Status(
            item.status().code(),
            absl::StrCat(item.status().message(),
                         saved.empty() ? "" : "; checkpoint written to ", saved));
      }
      if (!item.ok()) return item.status();
      if (!*item) break;
      const data::Batch* batch = &(*item)->batch;
      const int64_t n = batch->labels.size(0);
      const double lr = LearningRate(c.lr_schedule(), c.optimizer().lr(),
                                     pos.global_step, steps_per_epoch, total_steps);
      std::optional<losses::TeacherTargets> targets = std::move((*item)->targets);
      if (world > 1 && !buffers.empty()) {
        // As DDP does: BatchNorm statistics follow rank 0.
        phase_start = Clock::now();
        DISTILL_RETURN_IF_ERROR(job.grad_sync->BroadcastFromRankZero(
            buffers, absl::StrCat("broadcast of buffers at step ",
                                  pos.global_step + 1)));
        profile.sync += SecondsSince(phase_start);
      }
      DISTILL_ASSIGN_OR_RETURN(
          losses::CompositeResult step_loss,
          Step(job, *batch, targets, lr, pos.global_step, epoch, total_steps,
               profile));
      const double loss_value = step_loss.total.item<double>();
      if (!std::isfinite(loss_value)) {
        return absl::InternalError(absl::StrCat(
            "rank ", comm.rank(), ": loss became ", loss_value, " at step ",
            pos.global_step + 1,
            " (lower optimizer.lr or set grad_clip_norm); the last checkpoint "
            "is kept"));
      }
      sampler.Advance(n);
      pos.cursor = sampler.cursor() * world;
      pos.epoch = epoch;
      ++pos.global_step;
      loss_sum += loss_value * n;
      for (const auto& [name, v] : step_loss.terms) term_sums[name] += v * n;
      epoch_samples += n;

      const int64_t step_in_epoch = (sampler.cursor() + rank_batch - 1) / rank_batch;
      if (leader && (pos.global_step % c.log_every_steps() == 0 ||
                     step_in_epoch == steps_per_epoch)) {
        const double elapsed = SecondsSince(epoch_start);
        const double rate = world * epoch_samples / std::max(elapsed, 1e-9);
        const double eta = (total_steps - pos.global_step) * c.batch_size() / rate;
        const nlohmann::json teacher_stats =
            job.teacher ? prefetcher.TakeStats() : nlohmann::json::object();
        if (verbose) {
          std::printf("epoch %lld/%d step %lld/%lld loss %.4f [%s] lr %.4g %.0f samples/s ETA %s%s\n",
                      static_cast<long long>(epoch + 1), c.epochs(),
                      static_cast<long long>(step_in_epoch),
                      static_cast<long long>(steps_per_epoch), loss_value,
                      TermsString(step_loss.terms).c_str(), lr, rate,
                      FormatDuration(eta).c_str(),
                      TeacherProgress(teacher_stats).c_str());
          std::fflush(stdout);
        }
        nlohmann::json record = {{"type", "train"},      {"epoch", epoch + 1},
                                 {"step", pos.global_step}, {"loss", loss_value},
                                 {"lr", lr},              {"samples_per_sec", rate}};
        record["terms"] = step_loss.terms;
        record.update(teacher_stats);
        DISTILL_RETURN_IF_ERROR(metrics.Write(record));
      }

      bool stop_requested = options.stop_after_steps > 0 &&
                            pos.global_step >= options.stop_after_steps;
      const bool signalled = options.should_stop && options.should_stop();
      if (world > 1) {
        // The ranks agree, so all of them stop at the same step boundary.
        DISTILL_ASSIGN_OR_RETURN(
            bool any, comm.AnyRank(signalled, absl::StrCat("stop agreement at step ",
                                                           pos.global_step)));
        stop_requested = stop_requested || any;
      } else {
        stop_requested = stop_requested || signalled;
      }
      if (stop_requested ||
          (c.checkpoint_every_steps() > 0 &&
           pos.global_step % c.checkpoint_every_steps() == 0)) {
        DISTILL_ASSIGN_OR_RETURN(result.checkpoint, save(pos));
      }
      if (stop_requested) {
        result.stopped = true;
        return result;
      }
    }
    const double epoch_seconds = SecondsSince(epoch_start);
    train_seconds += epoch_seconds;
    trained_samples += epoch_samples * world;
    last_epoch_terms.clear();
    for (const auto& [name, sum] : term_sums) {
      last_epoch_terms[name] = sum / std::max<int64_t>(epoch_samples, 1);
    }

    // The epoch is complete: the next position is the start of the next one.
    pos.epoch = epoch + 1;
    pos.cursor = 0;
    const bool last = epoch + 1 == c.epochs();
    const nlohmann::json teacher_epoch =
        job.teacher ? prefetcher.EpochStats() : nlohmann::json::object();
    if (job.teacher) DISTILL_RETURN_IF_ERROR(job.teacher->EpochDone());
    if (!leader) continue;
    nlohmann::json epoch_record = {
        {"type", "epoch"},
        {"epoch", epoch + 1},
        {"step", pos.global_step},
        {"train_loss", loss_sum / std::max<int64_t>(epoch_samples, 1)},
        {"terms", last_epoch_terms},
        {"epoch_seconds", epoch_seconds},
        {"profile_seconds", profile.ToJson()},
        {"samples_per_sec", world * epoch_samples / std::max(epoch_seconds, 1e-9)}};
    epoch_record.update(teacher_epoch);
    if (last || (epoch + 1) % c.eval_every_epochs() == 0) {
      DISTILL_ASSIGN_OR_RETURN(EvalResult eval,
                               Evaluate(*job.model, *job.test, 512, true));
      last_eval = eval.ToJson();
      epoch_record.update(last_eval);
      if (verbose) {
        std::printf("epoch %lld/%d done in %s: test accuracy %.2f%%, test loss %.4f\n",
                    static_cast<long long>(epoch + 1), c.epochs(),
                    FormatDuration(epoch_seconds).c_str(), 100 * eval.accuracy,
                    eval.loss);
        std::fflush(stdout);
      }
    }
    DISTILL_RETURN_IF_ERROR(metrics.Write(epoch_record));
    if (last || (c.checkpoint_every_epochs() > 0 &&
                 (epoch + 1) % c.checkpoint_every_epochs() == 0)) {
      DISTILL_ASSIGN_OR_RETURN(result.checkpoint, save(pos));
    }
  }
  if (!leader) return result;

  const std::filesystem::path dir(run_dir);
  DISTILL_RETURN_IF_ERROR(job.model->SaveFile((dir / "model.pt").string()));
  if (job.model->is_torchscript()) {
    DISTILL_RETURN_IF_ERROR(
        job.model->SaveTorchScript((dir / "model.torchscript.pt").string()));
  }
  if (last_eval.is_null()) {
    // Resumed after the last epoch had finished: evaluate what was saved.
    DISTILL_ASSIGN_OR_RETURN(EvalResult eval,
                             Evaluate(*job.model, *job.test, 512, true));
    last_eval = eval.ToJson();
  }
  result.summary = BaseSummary(job);
  result.summary.update(last_eval);
  result.summary["steps"] = pos.global_step;
  result.summary["ranks"] = world;
  result.summary["train_seconds"] = train_seconds;
  result.summary["samples_per_sec"] =
      trained_samples / std::max(train_seconds, 1e-9);
  result.summary["loss_terms"] = last_epoch_terms;
  result.summary["checkpoint"] = result.checkpoint;
  DISTILL_RETURN_IF_ERROR(
      WriteJsonFile((dir / "summary.json").string(), result.summary));
  return result;
}

// The QAT stage on the job's (trained) student; its report joins the
// summary under "qat".
absl::Status Quantize(Job& job, const RunOptions& options, RunResult& result) {
  QatStageInputs in;
  in.config = &job.config;
  in.model = job.model.get();
  in.train = job.train.get();
  in.test = job.test.get();
  in.teacher = job.teacher.get();
  in.loss = &*job.loss;
  in.make_optimizer = [&job](std::vector<torch::Tensor> params, double lr) {
    OptimizerConfig optimizer = job.config.optimizer();
    optimizer.set_lr(lr);
    return MakeOptimizer(optimizer, std::move(params));
  };
  in.verbose = options.verbose;
  DISTILL_ASSIGN_OR_RETURN(nlohmann::json report, RunQatStage(in));
  if (result.summary.is_null()) result.summary = BaseSummary(job);
  result.summary["qat"] = {
      {"report", "qat/quantization_report.json"},
      {"accuracy", report["accuracy"]},
      {"onnx_file_bytes", report["onnx_file_bytes"]}};
  return WriteJsonFile(
      (std::filesystem::path(job.config.run_dir()) / "summary.json").string(),
      result.summary);
}

}  // namespace

absl::StatusOr<RunResult> RunJob(const JobConfig& config,
                                 const RunOptions& options) {
  Job job;
  DISTILL_RETURN_IF_ERROR(BuildJob(config, options, job));
  if (config.mode() == JobConfig::EVALUATE) return Evaluation(job);
  if (config.mode() == JobConfig::QUANTIZE) {
    RunResult result;
    DISTILL_RETURN_IF_ERROR(Quantize(job, options, result));
    return result;
  }
  DISTILL_ASSIGN_OR_RETURN(RunResult result, Train(job, options));
  if (config.has_qat() && !result.stopped && job.comm->rank() == 0) {
    DISTILL_RETURN_IF_ERROR(Quantize(job, options, result));
  }
  return result;
}

}  // namespace distill::trainer
