#include "launch/orphan_guard.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <set>
#include <string>
#include <system_error>

#include "absl/strings/str_cat.h"

namespace distill::launch {
namespace {

// One message from the launcher.
struct Message {
  char op;  // 'W': watch pgid, 'R': release pgid, 'D': dir, 'S': stop
  pid_t pgid;
  char dir[1024];  // 'D': a NUL-terminated path
};

int write_fd = -1;
pid_t guard_pid = -1;

void Send(char op, pid_t pgid, const std::string& dir = "") {
  if (write_fd < 0) return;
  Message m{};
  m.op = op;
  m.pgid = pgid;
  if (dir.size() >= sizeof(m.dir)) return;  // not ours to remove, then
  std::memcpy(m.dir, dir.data(), dir.size());
  ssize_t n;
  do {  // MSG_NOSIGNAL: a guard that is gone costs no SIGPIPE
    n = ::send(write_fd, &m, sizeof(m), MSG_NOSIGNAL);
  } while (n < 0 && errno == EINTR);
}

[[noreturn]] void RunGuard(int read_fd) {
  ::prctl(PR_SET_NAME, "distill_guard");
  const int null = ::open("/dev/null", O_RDWR);
  if (null >= 0) {
    ::dup2(null, STDIN_FILENO);
    ::dup2(null, STDOUT_FILENO);
    ::dup2(null, STDERR_FILENO);
  }
  std::set<pid_t> groups;
  std::string dir;
  while (true) {
    Message m;
    const ssize_t n = ::recv(read_fd, &m, sizeof(m), 0);
    if (n < 0 && errno == EINTR) continue;
    if (n != static_cast<ssize_t>(sizeof(m))) break;  // end of file: died
    if (m.op == 'S') ::_exit(0);
    if (m.op == 'W') groups.insert(m.pgid);
    if (m.op == 'R') groups.erase(m.pgid);
    if (m.op == 'D') dir.assign(m.dir, strnlen(m.dir, sizeof(m.dir)));
  }
  for (pid_t pgid : groups) ::kill(-pgid, SIGKILL);
  if (!dir.empty()) {
    std::error_code ignored;
    std::filesystem::remove_all(dir, ignored);
  }
  ::_exit(0);
}

}  // namespace

absl::Status OrphanGuard::Start() {
  // Packets keep messages whole; CLOEXEC keeps the launcher's end out of
  // its children, whose holding it open would hide the launcher's death.
  int fds[2];
  if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, fds) != 0) {
    return absl::InternalError(absl::StrCat(
        "cannot start the orphan guard: socketpair: ", strerror(errno)));
  }
  const pid_t pid = ::fork();
  if (pid < 0) {
    ::close(fds[0]);
    ::close(fds[1]);
    return absl::InternalError(
        absl::StrCat("cannot start the orphan guard: fork: ", strerror(errno)));
  }
  if (pid == 0) {
    ::close(fds[1]);
    RunGuard(fds[0]);
  }
  ::close(fds[0]);
  write_fd = fds[1];
  guard_pid = pid;
  return absl::OkStatus();
}

void OrphanGuard::Stop() {
  if (write_fd < 0) return;
  Send('S', 0);
  ::close(write_fd);
  write_fd = -1;
  while (::waitpid(guard_pid, nullptr, 0) < 0 && errno == EINTR) {
  }
  guard_pid = -1;
}

void OrphanGuard::Watch(pid_t pgid) { Send('W', pgid); }

void OrphanGuard::Release(pid_t pgid) { Send('R', pgid); }

void OrphanGuard::RemoveOnDeath(const std::string& dir) { Send('D', 0, dir); }

}  // namespace distill::launch
