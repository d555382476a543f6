// The `distill` binary: trains, distills or evaluates one job.
//
//   distill --config job.pbtxt [--run_dir DIR] [--resume]
//   distill --config job.pbtxt --write_target_store
//           [--loss_plugin PATH ...] [--teacher_endpoints host:port,...]
//           [--teacher_token_file PATH] [--teacher_tls_ca PATH]
//
// Loss plugins (the flag's, then the config's `plugins`) are loaded before
// the config is validated, so its loss terms may name their losses.
//
// Exit status: 0 on success (also after --stop_after_steps), 1 with one
// "distill: error: ..." line on any failure, 128+N when stopped by signal N
// (after writing a checkpoint at the next step boundary): 130 for SIGINT,
// 143 for SIGTERM, and 138 for SIGUSR1, the preemption notice a batch
// scheduler sends (Slurm's --signal=USR1@N), so a job script can tell a
// preemption from a cancellation.
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "common/malloc_tuning.h"
#include "losses/plugin_loader.h"
#include "losses/registry.h"
#include "trainer/config.h"
#include "trainer/dist/world.h"
#include "trainer/trainer.h"

ABSL_FLAG(std::string, config, "", "Job config in protobuf text format.");
ABSL_FLAG(std::string, run_dir, "", "Overrides the config's run_dir.");
ABSL_FLAG(bool, resume, false,
          "Continue from the newest checkpoint in the run directory.");
ABSL_FLAG(int64_t, stop_after_steps, 0,
          "Write a checkpoint and exit 0 after this many global steps "
          "(0: run to the end).");
ABSL_FLAG(bool, quiet, false, "No progress lines.");
ABSL_FLAG(std::vector<std::string>, loss_plugin, {},
          "Loss plugin (shared library) to load before the config is "
          "validated; repeat the flag or separate paths with commas. A "
          "relative path is taken from the current directory.");

ABSL_FLAG(bool, write_target_store, false,
          "Run the job's teacher once over every training window, write its "
          "targets to teacher.store_dir and exit (docs/TARGET_STORE.md); "
          "later runs of the job read them from there.");

ABSL_FLAG(std::vector<std::string>, teacher_endpoints, {},
          "Teacher servers (host:port, comma-separated) replacing the "
          "config's teacher: the job distills through them.");
ABSL_FLAG(std::string, teacher_token_file, "",
          "Overrides teacher.token_file: the bearer token for the teacher "
          "servers.");
ABSL_FLAG(std::string, teacher_tls_ca, "",
          "Overrides teacher.tls_ca_file: PEM root certificates; connects to "
          "the teacher servers with TLS.");

namespace {

volatile std::sig_atomic_t g_signal = 0;

void OnSignal(int signo) { g_signal = signo; }

// Every value of a repeatable flag, in order. Abseil keeps only the last
// occurrence of a flag, so the command line is read here as well; Abseil
// still parses and documents the flag. Accepts --name=V, --name V, -name=V
// and -name V, and comma-separated lists in each.
std::vector<std::string> RepeatedFlagValues(int argc, char** argv,
                                            const std::string& name) {
  std::vector<std::string> values;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--") break;
    for (const std::string dashes : {"--", "-"}) {
      const std::string bare = dashes + name;
      std::string value;
      if (arg == bare && i + 1 < argc) {
        value = argv[++i];
      } else if (arg.rfind(bare + "=", 0) == 0) {
        value = arg.substr(bare.size() + 1);
      } else {
        continue;
      }
      for (absl::string_view part : absl::StrSplit(value, ',')) {
        if (!part.empty()) values.emplace_back(part);
      }
      break;
    }
  }
  return values;
}

int Fail(const std::string& message) {
  std::fprintf(stderr, "distill: error: %s\n", message.c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  // A rank that dies leaves its peers' sockets broken: a write to one must
  // fail with EPIPE, which Gloo reports as an error naming the collective,
  // not kill this rank with SIGPIPE before it can say so (or checkpoint).
  std::signal(SIGPIPE, SIG_IGN);
  // Large tensors reused from the heap, not faulted in again every step.
  distill::TuneMallocForTensors();
  absl::SetProgramUsageMessage(
      "distill --config FILE [--run_dir DIR] [--resume]: train, distill or "
      "evaluate the job a protobuf text config describes");
  const std::vector<std::string> flag_plugins =
      RepeatedFlagValues(argc, argv, "loss_plugin");
  std::vector<char*> rest = absl::ParseCommandLine(argc, argv);
  if (rest.size() > 1) {
    return Fail(std::string("unexpected argument '") + rest[1] + "'");
  }
  const std::string config_path = absl::GetFlag(FLAGS_config);
  if (config_path.empty()) return Fail("--config FILE is required");
  if (absl::GetFlag(FLAGS_stop_after_steps) < 0) {
    return Fail("--stop_after_steps must be >= 0");
  }

  auto world = distill::trainer::DetectWorld(
      [](const char* name) { return std::getenv(name); });
  if (!world.ok()) return Fail(std::string(world.status().message()));
  // Read once: the path may be a pipe (`--config <(...)`).
  auto config_text = distill::trainer::ReadConfigFile(config_path);
  if (!config_text.ok())
    return Fail(std::string(config_text.status().message()));
  auto config_plugins =
      distill::trainer::ConfigPlugins(*config_text, config_path);
  if (!config_plugins.ok()) {
    return Fail(std::string(config_plugins.status().message()));
  }
  std::vector<std::string> plugins = flag_plugins;
  plugins.insert(plugins.end(), config_plugins->begin(), config_plugins->end());
  for (const std::string& plugin : plugins) {
    absl::Status loaded = distill::losses::LoadLossPlugin(
        plugin, distill::losses::LossRegistry::Global());
    if (!loaded.ok()) return Fail(std::string(loaded.message()));
  }
  distill::trainer::ConfigOverrides overrides;
  overrides.run_dir = absl::GetFlag(FLAGS_run_dir);
  overrides.teacher_endpoints = absl::GetFlag(FLAGS_teacher_endpoints);
  overrides.teacher_token_file = absl::GetFlag(FLAGS_teacher_token_file);
  overrides.teacher_tls_ca_file = absl::GetFlag(FLAGS_teacher_tls_ca);
  auto config =
      distill::trainer::ParseJobConfig(*config_text, config_path, overrides);
  if (!config.ok()) return Fail(std::string(config.status().message()));
  if (config->name().empty()) config->set_name(config_path);
  if (absl::GetFlag(FLAGS_write_target_store)) {
    if (world->world_size > 1) {
      return Fail(
          "--write_target_store runs in one process; start it without "
          "RANK/WORLD_SIZE");
    }
    auto store = distill::trainer::WriteTargetStore(
        *config, !absl::GetFlag(FLAGS_quiet));
    if (!store.ok()) return Fail(std::string(store.status().message()));
    return 0;
  }

  std::signal(SIGINT, OnSignal);
  std::signal(SIGTERM, OnSignal);
  std::signal(SIGUSR1, OnSignal);

  distill::trainer::RunOptions options;
  options.resume = absl::GetFlag(FLAGS_resume);
  options.stop_after_steps = absl::GetFlag(FLAGS_stop_after_steps);
  options.should_stop = [] { return g_signal != 0; };
  options.verbose = !absl::GetFlag(FLAGS_quiet);
  options.world = *world;

  auto result = distill::trainer::RunJob(*config, options);
  if (!result.ok()) return Fail(std::string(result.status().message()));
  if (result->stopped) {
    if (world->rank != 0) return g_signal != 0 ? 128 + g_signal : 0;
    std::printf("stopped after a checkpoint at %s; continue with --resume\n",
                result->checkpoint.c_str());
    return g_signal != 0 ? 128 + g_signal : 0;
  }
  if (result->summary.contains("test_accuracy")) {
    std::printf(
        "test accuracy %.2f%% (%s, %lld parameters); summary in "
        "%s/summary.json\n",
        100 * result->summary["test_accuracy"].get<double>(),
        result->summary["model"].get<std::string>().c_str(),
        static_cast<long long>(result->summary["params"].get<int64_t>()),
        config->run_dir().c_str());
  }
  return 0;
}
