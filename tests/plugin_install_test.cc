// The loss plugin workflow of docs/PLUGINS.md, end to end and out of tree:
// `cmake --install` this build into a fresh prefix, copy losses/examples/
// elsewhere, configure and build it with only `-DCMAKE_PREFIX_PATH=<prefix>`
// (find_package(Distill) + one MODULE library), and load the library it
// builds into a 2-rank distillation run by the installed `distill`.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "common/testing/process.h"
#include "common/testing/run_files.h"
#include "common/testing/scratch_dir.h"

namespace {

namespace fs = std::filesystem;
using ::testing::ElementsAre;

using ::distill::testing::ExpectLossTermWithin;
using ::distill::testing::FreePort;
using ::distill::testing::Process;
using ::distill::testing::ReadFile;
using ::distill::testing::RunShell;
using ::distill::testing::ScratchDirTest;
using ::distill::testing::Summary;
using ::distill::testing::TorchrunEnv;

std::string Quote(const fs::path& path) { return "'" + path.string() + "'"; }

class PluginInstallTest : public ScratchDirTest {
 protected:
  // Runs a shell command with its output in `dir_/<log>`; returns its exit
  // code (-signal when killed), and the log through `output`.
  int Shell(const std::string& command, const std::string& log,
            std::string* output) {
    const fs::path log_path = dir_ / log;
    const int code =
        RunShell(command + " > " + Quote(log_path) + " 2>&1", dir_).exit_code;
    *output = ReadFile(log_path);
    return code;
  }

  // `world` ranks of `distill` with torchrun-style variables; returns their
  // exit codes once all have finished. Rank r's stderr is in rank<r>.err.
  std::vector<int> RunRanks(const fs::path& distill, int world,
                            const std::vector<std::string>& args) {
    const int port = FreePort();
    std::vector<Process> ranks;
    for (int rank = 0; rank < world; ++rank) {
      const fs::path err = dir_ / ("rank" + std::to_string(rank) + ".err");
      std::vector<std::string> argv = {distill.string()};
      argv.insert(argv.end(), args.begin(), args.end());
      ranks.push_back(Process::Start(argv, "/dev/null", err,
                                     TorchrunEnv(rank, world, port)));
    }
    std::vector<int> codes;
    for (Process& rank : ranks) codes.push_back(rank.Wait());
    return codes;
  }

  std::string Err(int rank) {
    return ReadFile(dir_ / ("rank" + std::to_string(rank) + ".err"));
  }
};

TEST_F(PluginInstallTest, ExamplePluginBuiltAgainstInstallRunsOnTwoRanks) {
  const std::string cmake = DISTILL_CMAKE_COMMAND;
  const fs::path prefix = dir_ / "prefix";
  std::string log;

  // 1. Install this build.
  ASSERT_EQ(Shell(Quote(cmake) + " --install " + Quote(DISTILL_BUILD_DIR) +
                      " --prefix " + Quote(prefix),
                  "install.log", &log),
            0)
      << log;
  const fs::path distill = prefix / "bin" / "distill";
  ASSERT_TRUE(fs::exists(distill)) << log;
  ASSERT_TRUE(fs::exists(prefix / "include/distill/losses/plugin.h")) << log;

  // 2. Copy the example away from the source tree and build it as the docs
  //    do, against the installed package only. (A compiler launcher such as
  //    ccache, when the framework used one, only caches the compile.)
  const fs::path source = dir_ / "my_plugin";
  fs::create_directories(source);
  fs::copy(fs::path(DISTILL_SOURCE_DIR) / "losses/examples", source);
  if (std::string(DISTILL_CXX_LAUNCHER).size() > 0) {
    setenv("CMAKE_CXX_COMPILER_LAUNCHER", DISTILL_CXX_LAUNCHER, 1);
    // Paths under the (per-process) temp dir hash the same on every run.
    setenv("CCACHE_BASEDIR", dir_.c_str(), 1);
  }
  const fs::path build = source / "build";
  ASSERT_EQ(Shell("cd " + Quote(source) + " && " + Quote(cmake) +
                      " -S . -B build -DCMAKE_BUILD_TYPE=Release"
                      " -DCMAKE_PREFIX_PATH=" +
                      Quote(prefix),
                  "configure.log", &log),
            0)
      << log;
  ASSERT_EQ(
      Shell("cd " + Quote(source) + " && " + Quote(cmake) + " --build build",
            "build.log", &log),
      0)
      << log;
  const fs::path plugin = build / "libcosine_kd.so";
  ASSERT_TRUE(fs::exists(plugin)) << log;
  // Only the plugin's own file was compiled: nothing of the framework.
  std::vector<std::string> objects;
  for (const auto& e : fs::recursive_directory_iterator(build)) {
    if (e.path().extension() == ".o") {
      objects.push_back(e.path().filename().string());
    }
  }
  EXPECT_THAT(objects, ElementsAre("cosine_kd.cc.o"));

  // 3. A teacher, then a 2-rank distillation with the plugin's loss term.
  const fs::path teacher_config = Write("teacher.pbtxt", R"pb(
    mode: TRAIN
    student { arch: "mlp" }
    data { train_limit: 64 test_limit: 64 }
    batch_size: 64 epochs: 1 threads: 1
  )pb");
  const fs::path teacher = dir_ / "teacher";
  auto codes = RunRanks(distill, 1,
                        {"--quiet", "--config", teacher_config.string(),
                         "--run_dir", teacher.string()});
  ASSERT_EQ(codes[0], 0) << Err(0);

  const fs::path config =
      Write("job.pbtxt", R"pb(
    mode: DISTILL
    student { arch: "mlp" }
    teacher { model { arch: "mlp" weights: ")pb" +
                             (teacher / "model.pt").string() +
                             R"pb(" } }
    data { train_limit: 256 test_limit: 64 }
    batch_size: 64 epochs: 1 threads: 1 log_every_steps: 1
    loss { name: "cosine_kd" weight: 0.5 params { key: "eps" value: 1e-6 } }
    loss { name: "hard_ce" weight: 0.5 }
  )pb");
  const fs::path run = dir_ / "run";
  codes = RunRanks(distill, 2,
                   {"--quiet", "--loss_plugin", plugin.string(), "--config",
                    config.string(), "--run_dir", run.string()});
  ASSERT_EQ(codes[0], 0) << Err(0);
  ASSERT_EQ(codes[1], 0) << Err(1);

  const nlohmann::json summary = Summary(run);
  EXPECT_EQ(summary["ranks"], 2);
  // 1 - cosine similarity of two probability vectors lies in [0, 1], and is
  // not 0 for an untrained student against a trained teacher.
  const std::vector<nlohmann::json> train =
      ExpectLossTermWithin(run, "cosine_kd", 0.0, 1.0);
  // 256 samples, global batch 64, a record per step.
  EXPECT_EQ(train.size(), 256u / 64);
}

}  // namespace
