// The training loop of one rank: supervised training, distillation or
// evaluation, as the job config says. Builds data, models, losses and the
// optimizer from the config, runs epochs with evaluation, metrics and
// checkpoints, and writes <run_dir>/summary.json at the end.
// RunJob is not reentrant: one job per process at a time.
#ifndef DISTILL_TRAINER_TRAINER_H_
#define DISTILL_TRAINER_TRAINER_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "absl/status/statusor.h"
#include "trainer/config.h"
#include "trainer/dist/world.h"
#include "trainer/teacher/teacher_client.h"

namespace distill::trainer {

struct RunOptions {
  // Continue from the newest checkpoint in the run directory (start fresh
  // when there is none). Default: false.
  bool resume = false;
  // Write a checkpoint and return once this many global steps are done;
  // 0 runs to the end. For preemption drills and tests. Default: 0.
  int64_t stop_after_steps = 0;
  // Polled between steps; when it returns true the loop writes a checkpoint
  // and returns with `stopped` set (signal handling lives in main).
  std::function<bool()> should_stop;
  // Replaces the teacher the config describes (tests, other transports).
  std::shared_ptr<TeacherClient> teacher;
  // Print progress lines to stdout (rank 0 only). Default: true.
  bool verbose = true;
  // This process's place in the job (see trainer/world.h). Default: a
  // single process.
  WorldInfo world;
};

struct RunResult {
  // What summary.json holds (empty when stopped early).
  nlohmann::json summary;
  // True when the run stopped before the end (stop_after_steps or
  // should_stop) after writing `checkpoint`.
  bool stopped = false;
  std::string checkpoint;
};

absl::StatusOr<RunResult> RunJob(const JobConfig& config,
                                 const RunOptions& options);

// `distill --write_target_store`: runs the teacher of a DISTILL token job
// (its model here, or its servers) once over every training window and
// writes the targets to teacher.store_dir at the job's temperature and
// teacher.encoding (trainer/teacher/target_store.h). Nothing to do when a
// store for this job is already there; AlreadyExists when another is.
// Returns the store's store.json plus seconds and tokens_per_second.
absl::StatusOr<nlohmann::json> WriteTargetStore(const JobConfig& config,
                                                bool verbose);

}  // namespace distill::trainer

#endif  // DISTILL_TRAINER_TRAINER_H_
