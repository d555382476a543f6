#include "trainer/dist/world.h"

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace distill::trainer {
namespace {

// Reads an integer variable; `fallback` when unset.
absl::StatusOr<int> IntVar(
    const std::function<const char*(const char*)>& getenv, const char* name,
    int fallback) {
  const char* value = getenv(name);
  if (value == nullptr || *value == '\0') return fallback;
  int parsed = 0;
  if (!absl::SimpleAtoi(value, &parsed)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "environment variable ", name, "='", value, "' is not an integer"));
  }
  return parsed;
}

// SLURM_NTASKS_PER_NODE may read "2(x3)"; the leading count is what a node
// runs.
int LeadingInt(const char* value, int fallback) {
  if (value == nullptr) return fallback;
  int n = 0;
  const char* p = value;
  while (*p >= '0' && *p <= '9') n = n * 10 + (*p++ - '0');
  return p == value ? fallback : n;
}

}  // namespace

absl::StatusOr<std::string> FirstSlurmHost(const std::string& nodelist) {
  if (nodelist.empty()) {
    return absl::InvalidArgumentError("SLURM_JOB_NODELIST is empty");
  }
  // The first entry ends at the first comma outside brackets.
  size_t end = 0;
  int depth = 0;
  for (; end < nodelist.size(); ++end) {
    if (nodelist[end] == '[') ++depth;
    if (nodelist[end] == ']') --depth;
    if (nodelist[end] == ',' && depth == 0) break;
  }
  std::string host = nodelist.substr(0, end);
  auto malformed = [&] {
    return absl::InvalidArgumentError(
        absl::StrCat("malformed SLURM_JOB_NODELIST '", nodelist, "'"));
  };
  if (host.empty()) return malformed();
  // Each bracket group becomes its first number, zero padding kept:
  // "rack[2-3]-n[01-04]" -> "rack2-n01".
  for (size_t open = host.find('['); open != std::string::npos;
       open = host.find('[')) {
    const size_t close = host.find(']', open);
    if (close == std::string::npos) return malformed();
    const std::string ranges = host.substr(open + 1, close - open - 1);
    const std::string number = ranges.substr(0, ranges.find_first_of("-,"));
    if (number.empty() ||
        number.find_first_not_of("0123456789") != std::string::npos) {
      return malformed();
    }
    host = host.substr(0, open) + number + host.substr(close + 1);
  }
  if (host.find(']') != std::string::npos) return malformed();
  return host;
}

absl::StatusOr<WorldInfo> DetectWorld(
    const std::function<const char*(const char*)>& getenv) {
  WorldInfo w;
  auto set = [&](const absl::StatusOr<int>& v, int& out) -> absl::Status {
    if (!v.ok()) return v.status();
    out = *v;
    return absl::OkStatus();
  };
  absl::Status s;
  if (getenv("RANK") != nullptr || getenv("WORLD_SIZE") != nullptr) {
    w.source = "torchrun";
    if (!(s = set(IntVar(getenv, "RANK", 0), w.rank)).ok()) return s;
    if (!(s = set(IntVar(getenv, "WORLD_SIZE", 1), w.world_size)).ok())
      return s;
    if (!(s = set(IntVar(getenv, "LOCAL_RANK", w.rank), w.local_rank)).ok())
      return s;
    if (!(s = set(IntVar(getenv, "LOCAL_WORLD_SIZE", w.world_size),
                  w.local_world_size))
             .ok()) {
      return s;
    }
    if (const char* addr = getenv("MASTER_ADDR")) w.master_addr = addr;
    const char* agent = getenv("TORCHELASTIC_USE_AGENT_STORE");
    w.use_agent_store = agent != nullptr && std::string(agent) == "True";
    if (!(s = set(IntVar(getenv, "TORCHELASTIC_RESTART_COUNT", 0),
                  w.restart_count))
             .ok()) {
      return s;
    }
  } else if (getenv("SLURM_PROCID") != nullptr) {
    w.source = "slurm";
    if (!(s = set(IntVar(getenv, "SLURM_PROCID", 0), w.rank)).ok()) return s;
    if (!(s = set(IntVar(getenv, "SLURM_NTASKS", 1), w.world_size)).ok())
      return s;
    if (!(s = set(IntVar(getenv, "SLURM_LOCALID", 0), w.local_rank)).ok())
      return s;
    w.local_world_size =
        LeadingInt(getenv("SLURM_NTASKS_PER_NODE"), w.world_size);
    // Rank 0 runs on the first node of its step, which need not be the
    // job's first node when the job also runs other steps (teachers).
    const char* step_nodes = getenv("SLURM_STEP_NODELIST");
    if (const char* addr = getenv("MASTER_ADDR")) {
      w.master_addr = addr;
    } else if (const char* nodes = step_nodes != nullptr
                                       ? step_nodes
                                       : getenv("SLURM_JOB_NODELIST")) {
      auto host = FirstSlurmHost(nodes);
      if (!host.ok()) return host.status();
      w.master_addr = *host;
    }
  }
  // Slurm gives no port: derive one from the job id so two jobs sharing a
  // node do not collide, unless MASTER_PORT says otherwise.
  int default_port = 29500;
  if (w.source == "slurm") {
    absl::StatusOr<int> job = IntVar(getenv, "SLURM_JOB_ID", 0);
    if (job.ok()) default_port = 20000 + *job % 10000;
  }
  if (!(s = set(IntVar(getenv, "MASTER_PORT", default_port), w.master_port))
           .ok()) {
    return s;
  }
  if (w.world_size < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("world size must be >= 1 (got ", w.world_size, " from ",
                     w.source, " variables)"));
  }
  if (w.rank < 0 || w.rank >= w.world_size) {
    return absl::InvalidArgumentError(
        absl::StrCat("rank ", w.rank, " is outside [0, ", w.world_size,
                     ") (from ", w.source, " variables)"));
  }
  if (w.master_port < 1 || w.master_port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("MASTER_PORT ", w.master_port, " is outside 1..65535"));
  }
  return w;
}

}  // namespace distill::trainer
