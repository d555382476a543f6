#include "launch/supervisor.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <map>
#include <utility>

#include "absl/strings/str_cat.h"
#include "launch/orphan_guard.h"

extern char** environ;

namespace distill::launch {
namespace {

constexpr int kHandledSignals[] = {SIGINT, SIGTERM, SIGUSR1, SIGHUP, SIGCHLD};

sigset_t HandledSet() {
  sigset_t set;
  sigemptyset(&set);
  for (int s : kHandledSignals) sigaddset(&set, s);
  return set;
}

void WriteAll(int fd, absl::string_view bytes) {
  while (!bytes.empty()) {
    const ssize_t n = ::write(fd, bytes.data(), bytes.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;  // The reader is gone; output is best effort.
    bytes.remove_prefix(static_cast<size_t>(n));
  }
}

std::string ErrnoText(int err) { return ::strerror(err); }

// The child's environment: the launcher's, with `overrides` replacing
// variables of the same name.
std::vector<std::string> ChildEnvironment(
    const std::vector<std::string>& overrides) {
  std::map<std::string, std::string> vars;
  std::vector<std::string> order;
  auto put = [&](const std::string& entry) {
    const std::string name = entry.substr(0, entry.find('='));
    if (vars.find(name) == vars.end()) order.push_back(name);
    vars[name] = entry;
  };
  for (char** e = environ; *e != nullptr; ++e) put(*e);
  for (const std::string& entry : overrides) put(entry);
  std::vector<std::string> env;
  env.reserve(order.size());
  for (const std::string& name : order) env.push_back(vars[name]);
  return env;
}

int MillisUntil(absl::Time deadline) {
  const absl::Duration left = deadline - absl::Now();
  if (left <= absl::ZeroDuration()) return 0;
  if (left == absl::InfiniteDuration()) return -1;
  return static_cast<int>(
      absl::ToInt64Milliseconds(left + absl::Milliseconds(1)));
}

}  // namespace

struct Supervisor::Child {
  ChildSpec spec;
  pid_t pid = -1;
  bool exited = false;
  int wait_status = 0;
  // Read ends of the child's stdout and stderr pipes (-1 once closed).
  int fds[2] = {-1, -1};
  std::unique_ptr<LinePrefixer> prefixers[2];
};

absl::Status Supervisor::BlockSignals() {
  sigset_t set = HandledSet();
  if (::sigprocmask(SIG_BLOCK, &set, nullptr) != 0) {
    return absl::InternalError(absl::StrCat("sigprocmask: ", ErrnoText(errno)));
  }
  ::signal(SIGPIPE, SIG_IGN);
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Supervisor>> Supervisor::Create(int out_fd,
                                                               int err_fd) {
  sigset_t set = HandledSet();
  const int fd = ::signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
  if (fd < 0) {
    return absl::InternalError(absl::StrCat("signalfd: ", ErrnoText(errno)));
  }
  return std::unique_ptr<Supervisor>(new Supervisor(fd, out_fd, err_fd));
}

Supervisor::Supervisor(int signal_fd, int out_fd, int err_fd)
    : signal_fd_(signal_fd), out_fd_(out_fd), err_fd_(err_fd) {}

Supervisor::~Supervisor() {
  for (auto& c : children_) {
    if (!c->exited) {
      ::kill(-c->pid, SIGKILL);
      ::waitpid(c->pid, &c->wait_status, 0);
      c->exited = true;
      OrphanGuard::Release(c->pid);
    }
    for (int& fd : c->fds) {
      if (fd >= 0) ::close(fd);
      fd = -1;
    }
  }
  ::close(signal_fd_);
}

absl::StatusOr<int> Supervisor::Start(const ChildSpec& spec) {
  if (spec.argv.empty()) return absl::InvalidArgumentError("empty argv");
  // Everything the child needs is prepared before fork: after it, the child
  // calls only async-signal-safe functions.
  std::vector<std::string> env = ChildEnvironment(spec.env);
  std::vector<char*> envp, argv;
  for (std::string& e : env) envp.push_back(e.data());
  envp.push_back(nullptr);
  std::vector<std::string> args = spec.argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);

  int out[2], err[2], exec_error[2];
  if (::pipe2(out, O_CLOEXEC) != 0 || ::pipe2(err, O_CLOEXEC) != 0 ||
      ::pipe2(exec_error, O_CLOEXEC) != 0) {
    return absl::InternalError(absl::StrCat("pipe: ", ErrnoText(errno)));
  }
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid < 0) {
    return absl::InternalError(absl::StrCat("fork: ", ErrnoText(errno)));
  }
  if (pid == 0) {
    ::setpgid(0, 0);
    // Dies with the launcher, even when the launcher is SIGKILLed.
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(127);
    ::dup2(out[1], STDOUT_FILENO);
    ::dup2(err[1], STDERR_FILENO);
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    ::signal(SIGPIPE, SIG_DFL);
    ::execve(argv[0], argv.data(), envp.data());
    const int e = errno;
    (void)!::write(exec_error[1], &e, sizeof(e));
    ::_exit(127);
  }
  ::setpgid(pid, pid);  // Also here, so no signal can race the child's call.
  OrphanGuard::Watch(pid);
  ::close(out[1]);
  ::close(err[1]);
  ::close(exec_error[1]);
  int child_errno = 0;
  ssize_t n;
  do {
    n = ::read(exec_error[0], &child_errno, sizeof(child_errno));
  } while (n < 0 && errno == EINTR);
  ::close(exec_error[0]);
  if (n == sizeof(child_errno)) {
    ::waitpid(pid, nullptr, 0);
    ::close(out[0]);
    ::close(err[0]);
    return absl::FailedPreconditionError(absl::StrCat(
        "cannot run ", spec.argv[0], ": ", ErrnoText(child_errno)));
  }
  auto child = std::make_unique<Child>();
  child->spec = spec;
  child->pid = pid;
  child->fds[0] = out[0];
  child->fds[1] = err[0];
  const std::string prefix =
      absl::StrCat("[", spec.role, " ", spec.index, "] ");
  child->prefixers[0] = std::make_unique<LinePrefixer>(
      prefix, [this](absl::string_view l) { WriteAll(out_fd_, l); });
  child->prefixers[1] = std::make_unique<LinePrefixer>(
      prefix, [this](absl::string_view l) { WriteAll(err_fd_, l); });
  children_.push_back(std::move(child));
  return static_cast<int>(children_.size()) - 1;
}

void Supervisor::ReapExited(Events& events) {
  for (size_t id = 0; id < children_.size(); ++id) {
    Child& c = *children_[id];
    if (c.exited) continue;
    int status = 0;
    pid_t r;
    do {
      r = ::waitpid(c.pid, &status, WNOHANG);
    } while (r < 0 && errno == EINTR);
    if (r == c.pid) {
      c.exited = true;
      c.wait_status = status;
      // Anything the child left running in its group goes with it.
      ::kill(-c.pid, SIGKILL);
      OrphanGuard::Release(c.pid);
      events.exits.push_back({static_cast<int>(id), status});
    }
  }
}

void Supervisor::PollOnce(absl::Duration timeout, Events& events) {
  std::vector<pollfd> fds;
  std::vector<std::pair<Child*, int>> owners;
  fds.push_back({signal_fd_, POLLIN, 0});
  owners.push_back({nullptr, 0});
  for (auto& c : children_) {
    for (int s = 0; s < 2; ++s) {
      if (c->fds[s] < 0) continue;
      fds.push_back({c->fds[s], POLLIN, 0});
      owners.push_back({c.get(), s});
    }
  }
  const int ms = timeout == absl::InfiniteDuration()
                     ? -1
                     : static_cast<int>(absl::ToInt64Milliseconds(timeout));
  const int ready = ::poll(fds.data(), fds.size(), ms);
  if (ready <= 0) return;
  for (size_t i = 0; i < fds.size(); ++i) {
    if (fds[i].revents == 0) continue;
    if (owners[i].first == nullptr) {
      signalfd_siginfo info;
      while (::read(signal_fd_, &info, sizeof(info)) == sizeof(info)) {
        if (info.ssi_signo == SIGCHLD) continue;  // Reaped below.
        events.signals.push_back(static_cast<int>(info.ssi_signo));
      }
      continue;
    }
    Child& c = *owners[i].first;
    const int s = owners[i].second;
    char buffer[65536];
    const ssize_t n = ::read(c.fds[s], buffer, sizeof(buffer));
    if (n > 0) {
      c.prefixers[s]->Feed(absl::string_view(buffer, static_cast<size_t>(n)));
    } else if (n == 0 || (errno != EINTR && errno != EAGAIN)) {
      c.prefixers[s]->Flush();
      ::close(c.fds[s]);
      c.fds[s] = -1;
    }
  }
}

Events Supervisor::Wait(absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  Events events;
  while (true) {
    ReapExited(events);
    if (!events.empty()) return events;
    const int ms = MillisUntil(deadline);
    if (ms == 0) return events;
    PollOnce(ms < 0 ? absl::InfiniteDuration() : absl::Milliseconds(ms),
             events);
  }
}

void Supervisor::Signal(int id, int signo) {
  Child& c = *children_[id];
  if (!c.exited) ::kill(-c.pid, signo);
}

Events Supervisor::StopAll(absl::Duration grace) {
  Events events;
  for (size_t id = 0; id < children_.size(); ++id) Signal(id, SIGTERM);
  const absl::Time deadline = absl::Now() + grace;
  bool killed = false;
  while (running_count() > 0) {
    if (!killed && (absl::Now() >= deadline || !events.signals.empty())) {
      // Out of patience, or the user asked again: no more waiting.
      for (size_t id = 0; id < children_.size(); ++id) Signal(id, SIGKILL);
      killed = true;
    }
    const absl::Duration step =
        killed ? absl::Milliseconds(100)
               : std::max(deadline - absl::Now(), absl::ZeroDuration());
    PollOnce(step, events);
    ReapExited(events);
  }
  DrainOutput(absl::Seconds(2));
  return events;
}

void Supervisor::DrainOutput(absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  Events ignored;
  auto open = [&] {
    for (auto& c : children_) {
      if (c->exited && (c->fds[0] >= 0 || c->fds[1] >= 0)) return true;
    }
    return false;
  };
  while (open() && absl::Now() < deadline) {
    PollOnce(deadline - absl::Now(), ignored);
  }
  for (auto& c : children_) {
    if (!c->exited) continue;
    for (int s = 0; s < 2; ++s) {
      if (c->fds[s] < 0) continue;
      c->prefixers[s]->Flush();
      ::close(c->fds[s]);
      c->fds[s] = -1;
    }
  }
}

bool Supervisor::running(int id) const { return !children_[id]->exited; }
pid_t Supervisor::pid(int id) const { return children_[id]->pid; }
std::string Supervisor::name(int id) const {
  return absl::StrCat(children_[id]->spec.role, " ", children_[id]->spec.index);
}
const ChildSpec& Supervisor::spec(int id) const { return children_[id]->spec; }

int Supervisor::running_count() const {
  int n = 0;
  for (const auto& c : children_) n += c->exited ? 0 : 1;
  return n;
}

std::string DescribeExit(const std::string& name, int wait_status) {
  if (WIFSIGNALED(wait_status)) {
    const int sig = WTERMSIG(wait_status);
    const char* abbrev = ::sigabbrev_np(sig);
    return absl::StrCat(name, " was killed by signal ", sig, " (SIG",
                        abbrev != nullptr ? abbrev : "?", ")");
  }
  return absl::StrCat(name, " exited with status ", WEXITSTATUS(wait_status));
}

int ExitCode(int wait_status) {
  if (WIFSIGNALED(wait_status)) return 128 + WTERMSIG(wait_status);
  return WEXITSTATUS(wait_status);
}

}  // namespace distill::launch
