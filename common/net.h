// Loopback ports for processes the framework starts itself (the launcher's
// rendezvous, tests' servers). Stateless and thread-safe.
#ifndef DISTILL_COMMON_NET_H_
#define DISTILL_COMMON_NET_H_

#include "absl/status/statusor.h"

namespace distill {

// A TCP port on 127.0.0.1 that was free a moment ago: a random one in
// [10000, the start of the kernel's ephemeral port range), so no outgoing
// connection can be given it before the caller binds it (another process
// binding the same port explicitly still can); the kernel's choice for a
// bind to port 0 when that range is empty or full. Internal when no socket
// can be bound.
absl::StatusOr<int> FreeLoopbackPort();

}  // namespace distill

#endif  // DISTILL_COMMON_NET_H_
