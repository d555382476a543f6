// Helpers for tests that drive the built binaries as separate processes:
// where the binaries are, spawning and reaping them, free loopback ports,
// reading what they wrote, and bounded waits for what they do. For tests
// only.
#ifndef DISTILL_COMMON_TESTING_PROCESS_H_
#define DISTILL_COMMON_TESTING_PROCESS_H_

#include <sys/types.h>

#include <chrono>
#include <filesystem>
#include <functional>
#include <string>
#include <utility>
#include <vector>

namespace distill::testing {

// The folder of the built binaries: $DISTILL_BIN_DIR (ctest sets it), else
// this build's bin folder.
std::string BinDir();

// The repository root: $DISTILL_SOURCE_DIR, else this build's source tree.
std::string SourceDir();

// The whole file, or "" when it cannot be read.
std::string ReadFile(const std::filesystem::path& path);

// A TCP port on 127.0.0.1 that was free a moment ago.
int FreePort();

// Starts argv[0] (a path) with `argv` and, added to this process's
// environment, `env`; stdout and stderr go to the files.
pid_t Spawn(const std::vector<std::string>& argv,
            const std::filesystem::path& out, const std::filesystem::path& err,
            const std::vector<std::pair<std::string, std::string>>& env = {});

// The variables torchrun gives rank `rank` of `world` with its store on
// 127.0.0.1:`port`, for Spawn.
std::vector<std::pair<std::string, std::string>> TorchrunEnv(int rank, int world,
                                                             int port);

// Reaps `pid`: its exit code, or -signal when a signal ended it.
int WaitExit(pid_t pid);

// Polls `done` every few milliseconds until it holds (true) or `deadline`
// passes (false): a bounded wait for an event, never a delay standing in
// for one.
bool WaitUntil(const std::function<bool()>& done,
               std::chrono::milliseconds deadline = std::chrono::seconds(120));

// WaitUntil the file exists.
bool WaitForFile(const std::filesystem::path& path,
                 std::chrono::milliseconds deadline = std::chrono::seconds(120));

// WaitUntil `run_dir`/checkpoints holds a finished checkpoint (any
// ckpt-*.pt). Waiting for one particular file races with retention: with
// keep_checkpoints 2 the step-5 file is gone by step 15, which a fast run
// reaches in a fraction of a second.
bool WaitForCheckpoint(const std::filesystem::path& run_dir,
                       std::chrono::milliseconds deadline = std::chrono::seconds(120));

}  // namespace distill::testing

#endif  // DISTILL_COMMON_TESTING_PROCESS_H_
