// The teacher server's own TCP listener for plaintext gRPC. gRPC's listener
// (1.51, Debian's) stops accepting for good once accept fails with EMFILE,
// so a burst of connections beyond the open-files limit would leave a
// server that never takes a client again. This one accepts on a thread of
// its own and hands each connection to gRPC (AddInsecureChannelFromFd).
// Out of descriptors, it frees one it keeps in reserve, accepts the waiting
// connection and closes it at once (the client sees the connection close
// and may retry), takes the reserve back, and goes on accepting.
// TLS servers keep gRPC's listener: gRPC takes only plaintext channels from
// a descriptor.
#ifndef DISTILL_TEACHER_SERVER_LISTENER_H_
#define DISTILL_TEACHER_SERVER_LISTENER_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"

namespace distill::teacher {

class Listener {
 public:
  // Binds host:port (port 0: any free port) and listens; accepting starts
  // with Start(). Unavailable when the address cannot be bound.
  static absl::StatusOr<std::unique_ptr<Listener>> Bind(const std::string& host,
                                                        int port);
  ~Listener();  // Stop()s.

  int port() const { return port_; }

  // Accepts on a thread until Stop(), calling `take` with each connected,
  // non-blocking descriptor; `take` owns it.
  void Start(std::function<void(int fd)> take);
  // Stops accepting and closes the listening socket. Idempotent.
  void Stop();

 private:
  Listener() = default;
  void Run(const std::function<void(int fd)>& take);

  int fd_ = -1;
  int port_ = 0;
  int wake_[2] = {-1, -1};  // a pipe: writing to it ends Run
  int reserve_ = -1;        // /dev/null, freed to shed a connection
  std::thread thread_;
  // Connections closed unserved because no descriptor was free (Run's).
  int64_t shed_ = 0;
};

}  // namespace distill::teacher

#endif  // DISTILL_TEACHER_SERVER_LISTENER_H_
