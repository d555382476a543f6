// posix_spawnp with file actions for stdin/stdout; stderr goes to a
// temporary file so a failure can say what the tool said.
#include "common/subprocess.h"

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

extern char** environ;

namespace distill {
namespace {

// The last `n` non-empty lines of the file at `path`, joined by " | ".
std::string TailOf(const std::string& path, size_t n) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  std::vector<std::string> lines =
      absl::StrSplit(text.str(), '\n', absl::SkipWhitespace());
  if (lines.size() > n) lines.erase(lines.begin(), lines.end() - n);
  return absl::StrJoin(lines, " | ");
}

}  // namespace

absl::Status RunCommand(const std::vector<std::string>& argv,
                        const CommandOptions& options) {
  if (argv.empty()) return absl::InvalidArgumentError("empty command");
  char stderr_path[] = "/tmp/distill-stderr-XXXXXX";
  const int stderr_fd = ::mkstemp(stderr_path);
  if (stderr_fd < 0) {
    return absl::InternalError(
        absl::StrCat("cannot create a temporary file: ", std::strerror(errno)));
  }
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  if (!options.stdin_path.empty()) {
    posix_spawn_file_actions_addopen(&actions, 0, options.stdin_path.c_str(),
                                     O_RDONLY, 0);
  }
  if (!options.stdout_path.empty()) {
    posix_spawn_file_actions_addopen(&actions, 1, options.stdout_path.c_str(),
                                     O_WRONLY | O_CREAT | O_TRUNC, 0644);
  }
  posix_spawn_file_actions_adddup2(&actions, stderr_fd, 2);
  std::vector<char*> args;
  for (const std::string& a : argv)
    args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = 0;
  const int spawn_error =
      ::posix_spawnp(&pid, args[0], &actions, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  ::close(stderr_fd);
  if (spawn_error != 0) {
    ::unlink(stderr_path);
    return absl::NotFoundError(
        absl::StrCat("cannot run ", argv[0], ": ", std::strerror(spawn_error)));
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) {
      ::unlink(stderr_path);
      return absl::InternalError(
          absl::StrCat("waiting for ", argv[0], ": ", std::strerror(errno)));
    }
  }
  const std::string said = TailOf(stderr_path, 3);
  ::unlink(stderr_path);
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return absl::OkStatus();
  const std::string how =
      WIFEXITED(status)
          ? absl::StrCat("exited with status ", WEXITSTATUS(status))
          : absl::StrCat("died of signal ", WTERMSIG(status));
  return absl::InternalError(absl::StrCat(
      argv[0], " ", how, said.empty() ? "" : absl::StrCat(": ", said)));
}

}  // namespace distill
