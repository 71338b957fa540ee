/// connect_memory(): the one call a process makes to reach another process's exported memory. It
/// connects a SocketTransport over `fd` (handshake, window list), then probes process_vm_readv on
/// the agent's announced cookie: when the kernel allows it and the cookie matches (so the pid
/// really names the agent, not a process in another pid namespace), it returns a VmTransport that
/// keeps the socket as its liveness signal; when the kernel refuses (EPERM / EACCES: another user,
/// a non-dumpable agent, no ptrace permission; ESRCH: another pid namespace) it returns the
/// SocketTransport. `reason` says which was picked and why, for logs and for the user.
///
/// The one transport selector: `automatic` picks process_vm when the kernel allows it, else the
/// socket transport (the fastest for one synchronous transfer at a time). `uring` asks for the
/// io_uring transport (many requests in flight: UringTransport::read_async); where io_uring is
/// unavailable (kernel.io_uring_disabled, seccomp, an old kernel) it falls back to the socket
/// transport on the same connection and says why. The agent's pid is the kernel's record of who
/// sent its Hello (SCM_CREDENTIALS), not the pid the agent wrote in it.
#pragma once

#include <memory>
#include <string>

#include "shmkit/transport/memory_transport.hpp"
#include "shmkit/transport/socket_transport.hpp"
#include "shmkit/transport/uring_transport.hpp"

namespace shmkit::transport {

enum class TransportChoice { automatic, socket_only, vm_only, uring };

struct ConnectOptions {
  TransportChoice choice = TransportChoice::automatic;
  SocketTransportOptions socket;
  UringTransportOptions uring;  // for TransportChoice::uring
};

struct Connection {
  std::unique_ptr<MemoryTransport> transport;
  std::string reason;  // "vm: process_vm_readv allowed on pid 123" / "socket: process_vm_readv ... EPERM" / "uring: ..."
};

/// Throws shmkit::Error when the handshake fails, or (vm_only) when vm is not possible.
Connection connect_memory(int fd, const ConnectOptions& opts = {});

}  // namespace shmkit::transport
