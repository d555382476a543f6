// FreeLoopbackPort's promise: a port that binds, outside the kernel's
// ephemeral range, so no outgoing connection is handed it between the pick
// and the bind.
#include "common/net.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fstream>
#include <set>

namespace distill {
namespace {

bool Binds(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  const bool ok =
      ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
  ::close(fd);
  return ok;
}

TEST(NetTest, FreeLoopbackPortIsBelowTheEphemeralRangeAndBinds) {
  int first = 0, last = 0;
  std::ifstream("/proc/sys/net/ipv4/ip_local_port_range") >> first >> last;
  ASSERT_GT(first, 1024) << "no ephemeral range to stay out of";
  std::set<int> seen;
  for (int i = 0; i < 20; ++i) {
    absl::StatusOr<int> port = FreeLoopbackPort();
    ASSERT_TRUE(port.ok()) << port.status();
    EXPECT_GE(*port, 1024);
    EXPECT_LT(*port, first);
    EXPECT_TRUE(Binds(*port)) << *port;
    seen.insert(*port);
  }
  // Picked at random, not the same port every time.
  EXPECT_GT(seen.size(), 10u);
}

}  // namespace
}  // namespace distill
