// Where this process sits in a multi-process job, read from the environment
// by the torchrun conventions (RANK, WORLD_SIZE, LOCAL_RANK,
// LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT) with a fallback to Slurm's
// (SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID, SLURM_NTASKS_PER_NODE, the
// first host of SLURM_STEP_NODELIST, else of SLURM_JOB_NODELIST). Stateless
// and thread-safe.
#ifndef DISTILL_TRAINER_DIST_WORLD_H_
#define DISTILL_TRAINER_DIST_WORLD_H_

#include <functional>
#include <string>

#include "absl/status/statusor.h"

namespace distill::trainer {

struct WorldInfo {
  int rank = 0;
  int world_size = 1;
  int local_rank = 0;
  int local_world_size = 1;
  // Rendezvous address of rank 0's TCPStore.
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;
  // "single", "torchrun" or "slurm": where the values came from.
  std::string source = "single";
  // torchrun's agent already serves the TCPStore at MASTER_PORT
  // (TORCHELASTIC_USE_AGENT_STORE=True): every rank joins it as a client,
  // under the prefix "/worker/attempt_<restart_count>", as PyTorch does.
  bool use_agent_store = false;
  int restart_count = 0;
};

// `getenv` is injectable for tests; it returns nullptr for unset names.
// InvalidArgument naming the variable for a non-numeric or inconsistent
// value (rank outside [0, world_size), a port outside 1..65535, ...).
absl::StatusOr<WorldInfo> DetectWorld(
    const std::function<const char*(const char*)>& getenv);

// The first host of a Slurm host list: "node[03-05,9],gpu1" -> "node03".
// InvalidArgument for an empty or malformed list.
absl::StatusOr<std::string> FirstSlurmHost(const std::string& nodelist);

}  // namespace distill::trainer

#endif  // DISTILL_TRAINER_DIST_WORLD_H_
