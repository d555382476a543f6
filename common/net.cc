#include "common/net.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fstream>
#include <random>

namespace distill {
namespace {

// Binds `port` (0: the kernel's choice) on 127.0.0.1 and closes it; the
// bound port, or -1.
int BindLoopback(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  socklen_t len = sizeof(addr);
  const bool ok =
      ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0;
  ::close(fd);
  return ok ? static_cast<int>(ntohs(addr.sin_port)) : -1;
}

}  // namespace

absl::StatusOr<int> FreeLoopbackPort() {
  // Below the ephemeral range the kernel hands out to outgoing connections
  // (Linux: 32768-60999), so none of those takes the port between this
  // pick and the caller's bind; picked at random so concurrent callers
  // rarely meet.
  int ephemeral_first = 0, ephemeral_last = 0;
  std::ifstream("/proc/sys/net/ipv4/ip_local_port_range") >> ephemeral_first >>
      ephemeral_last;
  constexpr int kLowest = 10000;
  if (ephemeral_first > kLowest + 100) {
    std::random_device seed;
    std::mt19937 pick(seed());
    std::uniform_int_distribution<int> port(kLowest, ephemeral_first - 1);
    for (int attempt = 0; attempt < 64; ++attempt) {
      const int bound = BindLoopback(port(pick));
      if (bound > 0) return bound;
    }
  }
  const int bound = BindLoopback(0);
  if (bound < 0) return absl::InternalError("cannot bind a loopback port");
  return bound;
}

}  // namespace distill
