// Helpers for tests that drive the built binaries as separate processes:
// where the binaries are, child processes that are reaped exactly once,
// commands run to completion with their output captured, free loopback
// ports, and bounded waits for what the processes do. For tests only; not
// thread-safe (one test thread uses them).
#ifndef DISTILL_COMMON_TESTING_PROCESS_H_
#define DISTILL_COMMON_TESTING_PROCESS_H_

#include <sys/types.h>

#include <chrono>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace distill::testing {

using EnvVars = std::vector<std::pair<std::string, std::string>>;

// The folder of the built binaries: $DISTILL_BIN_DIR (ctest sets it), else
// this build's bin folder.
std::string BinDir();

// The repository root: $DISTILL_SOURCE_DIR, else this build's source tree.
std::string SourceDir();

// The whole file, or "" when it cannot be read.
std::string ReadFile(const std::filesystem::path& path);

// A TCP port on 127.0.0.1 that was free a moment ago; a test failure when
// none can be bound.
int FreePort();

// The variables torchrun gives rank `rank` of `world` with its store on
// 127.0.0.1:`port`.
EnvVars TorchrunEnv(int rank, int world, int port);

// A child process, reaped exactly once: the exit status read by Exited()
// is kept for Wait(), so a child that ended while a test polled it is never
// read as exit 0. A child still running at destruction is killed and
// reaped, so no process outlives its test.
class Process {
 public:
  // Starts argv[0] (a path) with `argv` and, added to this process's
  // environment, `env`; stdout and stderr go to the files.
  static Process Start(const std::vector<std::string>& argv,
                       const std::filesystem::path& out,
                       const std::filesystem::path& err,
                       const EnvVars& env = {});
  Process() = default;
  Process(Process&& other) noexcept;
  Process& operator=(Process&& other) noexcept;
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;
  ~Process();

  pid_t pid() const { return pid_; }
  // True once the child has ended (reaped without blocking).
  bool Exited();
  // Blocks until the child ends: its exit code, or -signal when a signal
  // ended it. A child that cannot be waited for is a test failure and
  // returns kLostExitStatus.
  int Wait();
  // Sends `signo` while the child has not been reaped (a reaped pid may
  // belong to another process by now).
  void Signal(int signo);

  static constexpr int kLostExitStatus = -1000;

 private:
  void Reap(int options);

  pid_t pid_ = -1;
  std::optional<int> exit_code_;
};

// What a command run to completion left.
struct Outcome {
  // Exit code, or -signal when a signal ended it (a crash).
  int exit_code = Process::kLostExitStatus;
  std::string out;
  std::string err;
};

// Runs `command` with /bin/sh, its stdout and stderr going to
// `dir`/stdout.txt and `dir`/stderr.txt, and returns both with the exit
// code.
Outcome RunShell(const std::string& command, const std::filesystem::path& dir);

// Writes a self-signed certificate (RSA 2048, one day) for common name `cn`
// with subjectAltName `san` (e.g. "IP:127.0.0.1", "DNS:node2") and its key
// into `dir`/<name>.pem and `dir`/<name>.key, with the openssl command;
// the openssl outcome (exit code 0 when written).
Outcome MakeSelfSignedCertificate(const std::filesystem::path& dir,
                                  const std::string& name,
                                  const std::string& cn,
                                  const std::string& san);

// Runs argv to completion like Process::Start, with the output in
// `dir`/<name>.out and <name>.err.
Outcome RunProcess(const std::vector<std::string>& argv,
                   const std::filesystem::path& dir, const std::string& name,
                   const EnvVars& env = {});

// Polls `done` every few milliseconds until it holds (true) or `deadline`
// passes (false): a bounded wait for an event, never a delay standing in
// for one.
bool WaitUntil(const std::function<bool()>& done,
               std::chrono::milliseconds deadline = std::chrono::seconds(120));

// WaitUntil the file exists.
bool WaitForFile(
    const std::filesystem::path& path,
    std::chrono::milliseconds deadline = std::chrono::seconds(120));

// WaitUntil `run_dir`/checkpoints holds a finished checkpoint (any
// ckpt-*.pt). Waiting for one particular file races with retention: with
// keep_checkpoints 2 the step-5 file is gone by step 15, which a fast run
// reaches in a fraction of a second.
bool WaitForCheckpoint(
    const std::filesystem::path& run_dir,
    std::chrono::milliseconds deadline = std::chrono::seconds(120));

}  // namespace distill::testing

#endif  // DISTILL_COMMON_TESTING_PROCESS_H_
