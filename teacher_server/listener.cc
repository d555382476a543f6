#include "teacher_server/listener.h"

#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <optional>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace distill::teacher {

namespace {

void CloseIfOpen(int& fd) {
  if (fd >= 0) close(fd);
  fd = -1;
}

int OpenReserve() { return open("/dev/null", O_RDONLY | O_CLOEXEC); }

}  // namespace

absl::StatusOr<std::unique_ptr<Listener>> Listener::Bind(
    const std::string& host, int port) {
  const std::string where = absl::StrCat(host, ":", port);
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* found = nullptr;
  const std::string service = std::to_string(port);
  const int resolved = getaddrinfo(host.empty() ? nullptr : host.c_str(),
                                   service.c_str(), &hints, &found);
  if (resolved != 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot listen on ", where, ": ", gai_strerror(resolved)));
  }
  std::unique_ptr<Listener> listener(new Listener);
  std::string error = "no address";
  for (addrinfo* a = found; a != nullptr; a = a->ai_next) {
    const int fd =
        socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK,
               a->ai_protocol);
    if (fd < 0) {
      error = std::strerror(errno);
      continue;
    }
    const int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(fd, a->ai_addr, a->ai_addrlen) != 0 ||
        listen(fd, SOMAXCONN) != 0) {
      error = std::strerror(errno);
      close(fd);
      continue;
    }
    listener->fd_ = fd;
    break;
  }
  freeaddrinfo(found);
  if (listener->fd_ < 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot listen on ", where, ": ", error));
  }
  sockaddr_storage bound{};
  socklen_t length = sizeof(bound);
  if (getsockname(listener->fd_, reinterpret_cast<sockaddr*>(&bound),
                  &length) != 0) {
    return absl::UnavailableError(absl::StrCat(
        "cannot listen on ", where, ": getsockname: ", std::strerror(errno)));
  }
  listener->port_ =
      ntohs(bound.ss_family == AF_INET6
                ? reinterpret_cast<sockaddr_in6*>(&bound)->sin6_port
                : reinterpret_cast<sockaddr_in*>(&bound)->sin_port);
  if (pipe2(listener->wake_, O_CLOEXEC | O_NONBLOCK) != 0 ||
      (listener->reserve_ = OpenReserve()) < 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot listen on ", where, ": ", std::strerror(errno)));
  }
  return listener;
}

Listener::~Listener() {
  Stop();
  CloseIfOpen(wake_[0]);
  CloseIfOpen(wake_[1]);
  CloseIfOpen(reserve_);
}

void Listener::Start(std::function<void(int fd)> take) {
  thread_ = std::thread([this, take = std::move(take)] { Run(take); });
}

void Listener::Stop() {
  if (thread_.joinable()) {
    const char byte = 0;
    while (write(wake_[1], &byte, 1) < 0 && errno == EINTR) {
    }
    thread_.join();
  }
  CloseIfOpen(fd_);
}

void Listener::Run(const std::function<void(int fd)>& take) {
  using Clock = std::chrono::steady_clock;
  std::optional<Clock::time_point> last_report;
  pollfd watched[2] = {{fd_, POLLIN, 0}, {wake_[0], POLLIN, 0}};
  // Waits 100 ms on the wake pipe alone; true when Stop() asked to end.
  // A signal (EINTR) only cuts the pause short.
  auto pause = [&watched] {
    watched[1].revents = 0;
    return poll(&watched[1], 1, 100) > 0 && (watched[1].revents & POLLIN);
  };
  while (true) {
    // The reserve, if it could not be taken back after shedding.
    if (reserve_ < 0) reserve_ = OpenReserve();
    watched[0].revents = watched[1].revents = 0;
    if (poll(watched, 2, -1) < 0) {
      if (errno == EINTR) continue;
      std::fprintf(stderr, "teacher_server: listener poll failed: %s\n",
                   std::strerror(errno));
      if (pause()) return;
      continue;
    }
    if (watched[1].revents & POLLIN) return;
    if ((watched[0].revents & POLLIN) == 0) continue;
    const int fd = accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (fd >= 0) {
      const int one = 1;
      setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
      take(fd);
      continue;
    }
    if (errno == ENOBUFS || errno == ENOMEM) {
      if (pause()) return;
      continue;
    }
    if (errno != EMFILE && errno != ENFILE) continue;  // EAGAIN, ECONNABORTED
    // Out of descriptors: shed the oldest waiting connection with the
    // reserve, so the backlog does not keep poll() ready for nothing.
    bool shed_one = false;
    if (reserve_ >= 0) {
      CloseIfOpen(reserve_);
      const int unserved = accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (unserved >= 0) {
        close(unserved);
        shed_one = true;
        ++shed_;
      }
      reserve_ = OpenReserve();
    }
    const auto now = Clock::now();
    if (!last_report || now - *last_report >= std::chrono::seconds(10)) {
      rlimit limit{};
      getrlimit(RLIMIT_NOFILE, &limit);
      std::fprintf(stderr,
                   "teacher_server: no descriptor free for a new connection "
                   "(open files limit %llu): %lld connections closed unserved "
                   "so far\n",
                   static_cast<unsigned long long>(limit.rlim_cur),
                   static_cast<long long>(shed_));
      std::fflush(stderr);
      last_report = now;
    }
    // Without a reserve (another thread took the descriptor), nothing can
    // be shed: wait for descriptors to be freed instead of spinning.
    if (!shed_one && pause()) return;
  }
}

}  // namespace distill::teacher
