#include "common/testing/process.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <thread>

#include "common/file.h"
#include "common/net.h"

namespace distill::testing {

namespace fs = std::filesystem;

std::string BinDir() {
  const char* env = std::getenv("DISTILL_BIN_DIR");
  return env != nullptr ? env : DISTILL_BIN_DIR_DEFAULT;
}

std::string SourceDir() {
  const char* env = std::getenv("DISTILL_SOURCE_DIR");
  return env != nullptr ? env : DISTILL_SOURCE_DIR_DEFAULT;
}

std::string ReadFile(const fs::path& path) {
  return ::distill::ReadFile(path.string()).value_or("");
}

int FreePort() {
  absl::StatusOr<int> port = FreeLoopbackPort();
  if (!port.ok()) {
    ADD_FAILURE() << port.status();
    return 0;
  }
  return *port;
}

EnvVars TorchrunEnv(int rank, int world, int port) {
  return {{"RANK", std::to_string(rank)},
          {"WORLD_SIZE", std::to_string(world)},
          {"LOCAL_RANK", std::to_string(rank)},
          {"MASTER_ADDR", "127.0.0.1"},
          {"MASTER_PORT", std::to_string(port)}};
}

Process Process::Start(const std::vector<std::string>& argv,
                       const fs::path& out, const fs::path& err,
                       const EnvVars& env) {
  Process process;
  process.pid_ = ::fork();
  if (process.pid_ == 0) {
    for (const auto& [name, value] : env) {
      ::setenv(name.c_str(), value.c_str(), 1);
    }
    const int o = ::open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    const int e = ::open(err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ::dup2(o, 1);
    ::dup2(e, 2);
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    ::execv(args[0], args.data());
    ::_exit(127);
  }
  if (process.pid_ < 0) {
    ADD_FAILURE() << "fork failed: " << std::strerror(errno);
  }
  return process;
}

Process::Process(Process&& other) noexcept
    : pid_(other.pid_), exit_code_(other.exit_code_) {
  other.pid_ = -1;
}

Process& Process::operator=(Process&& other) noexcept {
  if (this != &other) {
    this->~Process();
    pid_ = other.pid_;
    exit_code_ = other.exit_code_;
    other.pid_ = -1;
  }
  return *this;
}

Process::~Process() {
  if (pid_ > 0 && !exit_code_) {
    ::kill(pid_, SIGKILL);
    Reap(0);
  }
}

void Process::Reap(int options) {
  int status = 0;
  pid_t got;
  do {
    got = ::waitpid(pid_, &status, options);
  } while (got < 0 && errno == EINTR);
  if (got == 0) return;  // WNOHANG: still running.
  if (got != pid_) {
    ADD_FAILURE() << "waitpid(" << pid_ << ") failed: " << std::strerror(errno)
                  << "; its exit status is lost";
    exit_code_ = kLostExitStatus;
    return;
  }
  exit_code_ = WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
}

bool Process::Exited() {
  if (pid_ <= 0) return true;
  if (!exit_code_) Reap(WNOHANG);
  return exit_code_.has_value();
}

int Process::Wait() {
  if (pid_ <= 0) {
    ADD_FAILURE() << "waiting for a process that was never started";
    return kLostExitStatus;
  }
  if (!exit_code_) Reap(0);
  return *exit_code_;
}

void Process::Signal(int signo) {
  if (pid_ > 0 && !exit_code_) ::kill(pid_, signo);
}

Outcome RunShell(const std::string& command, const fs::path& dir) {
  const fs::path out = dir / "stdout.txt", err = dir / "stderr.txt";
  Process shell = Process::Start({"/bin/sh", "-c", command}, out, err);
  Outcome outcome;
  outcome.exit_code = shell.Wait();
  outcome.out = ReadFile(out);
  outcome.err = ReadFile(err);
  return outcome;
}

Outcome MakeSelfSignedCertificate(const fs::path& dir, const std::string& name,
                                  const std::string& cn,
                                  const std::string& san) {
  return RunProcess(
      {"/usr/bin/openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
       "-days", "1", "-subj", "/CN=" + cn, "-addext", "subjectAltName=" + san,
       "-keyout", (dir / (name + ".key")).string(), "-out",
       (dir / (name + ".pem")).string()},
      dir, "openssl-" + name);
}

Outcome RunProcess(const std::vector<std::string>& argv, const fs::path& dir,
                   const std::string& name, const EnvVars& env) {
  const fs::path out = dir / (name + ".out"), err = dir / (name + ".err");
  Process process = Process::Start(argv, out, err, env);
  Outcome outcome;
  outcome.exit_code = process.Wait();
  outcome.out = ReadFile(out);
  outcome.err = ReadFile(err);
  return outcome;
}

bool WaitUntil(const std::function<bool()>& done,
               std::chrono::milliseconds deadline) {
  const auto end = std::chrono::steady_clock::now() + deadline;
  while (std::chrono::steady_clock::now() < end) {
    if (done()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return done();
}

bool WaitForFile(const fs::path& path, std::chrono::milliseconds deadline) {
  return WaitUntil([&] { return fs::exists(path); }, deadline);
}

bool WaitForCheckpoint(const fs::path& run_dir,
                       std::chrono::milliseconds deadline) {
  const fs::path dir = run_dir / "checkpoints";
  return WaitUntil(
      [&] {
        std::error_code ec;
        for (fs::directory_iterator it(dir, ec), end; !ec && it != end;
             it.increment(ec)) {
          const std::string name = it->path().filename().string();
          if (name.rfind("ckpt-", 0) == 0 && name.size() > 8 &&
              name.compare(name.size() - 3, 3, ".pt") == 0) {
            return true;
          }
        }
        return false;
      },
      deadline);
}

}  // namespace distill::testing
