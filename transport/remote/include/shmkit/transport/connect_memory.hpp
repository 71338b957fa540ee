/// connect_memory(): the one call a process makes to reach another process's exported memory. It
/// connects a SocketTransport over `fd` (handshake, window list), then probes process_vm_readv on
/// the agent's announced cookie: when the kernel allows it and the cookie matches (so the pid
/// really names the agent, not a process in another pid namespace), it returns a VmTransport that
/// keeps the socket as its liveness signal; when the kernel refuses (EPERM / EACCES: another user,
/// a non-dumpable agent, no ptrace permission; ESRCH: another pid namespace) it returns the
/// SocketTransport. `reason` says which was picked and why, for logs and for the user.
#pragma once

#include <memory>
#include <string>

#include "shmkit/transport/memory_transport.hpp"
#include "shmkit/transport/socket_transport.hpp"

namespace shmkit::transport {

enum class TransportChoice { automatic, socket_only, vm_only };

struct ConnectOptions {
  TransportChoice choice = TransportChoice::automatic;
  SocketTransportOptions socket;
};

struct Connection {
  std::unique_ptr<MemoryTransport> transport;
  std::string reason;  // "vm: process_vm_readv allowed on pid 123" / "socket: process_vm_readv ... EPERM"
};

/// Throws shmkit::Error when the socket handshake fails, or (vm_only) when vm is not possible.
Connection connect_memory(int fd, const ConnectOptions& opts = {});

}  // namespace shmkit::transport
