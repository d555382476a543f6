#include "common/testing/teacher_process.h"

#include <gtest/gtest.h>
#include <signal.h>

#include <cstdlib>

namespace distill::testing {

namespace fs = std::filesystem;

TeacherServerProcess::TeacherServerProcess(const fs::path& dir,
                                           const std::string& name,
                                           const std::vector<std::string>& args,
                                           bool expect_serving)
    : out_(dir / (name + ".out")), err_(dir / (name + ".err")) {
  const fs::path port_file = dir / (name + ".port");
  fs::remove(port_file);
  std::vector<std::string> argv = {BinDir() + "/teacher_server",
                                   "--port_file=" + port_file.string(),
                                   "--threads=1"};
  argv.insert(argv.end(), args.begin(), args.end());
  process_ = Process::Start(argv, out_, err_);
  // The server writes "<port>\n" (atomically) once it serves.
  const bool settled = WaitUntil([&] {
    return ReadFile(port_file).find('\n') != std::string::npos ||
           process_.Exited();
  });
  if (!process_.Exited()) port_ = std::atoi(ReadFile(port_file).c_str());
  if (expect_serving) {
    EXPECT_TRUE(settled && port_ > 0)
        << "teacher_server did not start: " << err();
  }
}

TeacherServerProcess::~TeacherServerProcess() {
  if (!process_.Exited()) Terminate();
}

void TeacherServerProcess::Stop() { process_.Signal(SIGSTOP); }

void TeacherServerProcess::Kill() {
  process_.Signal(SIGKILL);
  process_.Wait();
}

int TeacherServerProcess::Terminate() {
  process_.Signal(SIGTERM);
  process_.Signal(SIGCONT);
  return process_.Wait();
}

}  // namespace distill::testing
