// A `teacher_server` child process for tests: started on a free loopback
// port with a port file, and waited for (bounded) until the file says it
// serves. SIGTERMed and reaped at destruction unless killed before. For
// tests only.
#ifndef DISTILL_COMMON_TESTING_TEACHER_PROCESS_H_
#define DISTILL_COMMON_TESTING_TEACHER_PROCESS_H_

#include <filesystem>
#include <string>
#include <vector>

#include "common/testing/process.h"

namespace distill::testing {

class TeacherServerProcess {
 public:
  // Runs `teacher_server --port_file=<dir>/<name>.port --threads=1 args...`
  // with its output in <dir>/<name>.out and .err, and waits until it serves
  // or exits. A server that does not serve is a test failure unless
  // `expect_serving` is false (for tests of failed starts).
  TeacherServerProcess(const std::filesystem::path& dir,
                       const std::string& name,
                       const std::vector<std::string>& args,
                       bool expect_serving = true);
  ~TeacherServerProcess();

  // Whether it came up; port() is 0 when it did not.
  bool serving() const { return port_ > 0; }
  int port() const { return port_; }
  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }
  // Its stdout and stderr so far.
  std::string out() const { return ReadFile(out_); }
  std::string err() const { return ReadFile(err_); }

  // Sends `signo` (while the process has not been reaped).
  void Signal(int signo) { process_.Signal(signo); }
  // SIGSTOP: the process stops but its connections stay open.
  void Stop();
  // SIGKILL, then reaps it.
  void Kill();
  // SIGTERM (and SIGCONT, which a stopped process needs to act on it); its
  // exit code, or -signal when a signal ended it.
  int Terminate();
  // Blocks until it exits on its own: its exit code or -signal.
  int Wait() { return process_.Wait(); }

 private:
  Process process_;
  std::filesystem::path out_, err_;
  int port_ = 0;
};

}  // namespace distill::testing

#endif  // DISTILL_COMMON_TESTING_TEACHER_PROCESS_H_
