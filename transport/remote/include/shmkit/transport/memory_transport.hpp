/// MemoryTransport: reads and writes the memory of another process (the one running an Agent)
/// that this process does not map. Addresses are the remote process's own addresses inside the
/// windows its Agent exported (see memory_protocol.hpp).
///
/// Implementations (every one passes tests/transport/memory_transport_suite_test.cpp):
///   SocketTransport  socket_transport.hpp  requests over any connected stream socket (rsyscall's
///                                          design); the agent splices replies from the window's fd
///   VmTransport      vm_transport.hpp      process_vm_readv/writev (same user, ptrace allowed)
///   connect_memory() picks VmTransport when the kernel allows it, else SocketTransport.
///
/// Calls are hot-path: noexcept, 0 on success or -errno:
///   -EFAULT      the range is not inside one exported window (or not mapped there)
///   -EACCES      write to a read-only window
///   -EPIPE       the connection or the remote process is gone (also after a broken stream: once
///                a transfer failed mid-frame, every later call returns -EPIPE)
///   -ETIMEDOUT   no progress within the transport's I/O timeout
///   -EPROTO      the peer sent something malformed
/// A transport object is used by one thread at a time.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>
#include <vector>

#include "shmkit/transport/memory_protocol.hpp"

namespace shmkit::transport {

using memproto::WindowDesc;

class MemoryTransport {
 public:
  virtual ~MemoryTransport() = default;
  /// Copies remote [remote, remote+len) into local [local, local+len). len 0 is a no-op.
  [[nodiscard]] virtual int read(std::uint64_t remote, void* local, std::size_t len) noexcept = 0;
  /// Copies local [local, local+len) into remote [remote, remote+len).
  [[nodiscard]] virtual int write(std::uint64_t remote, const void* local, std::size_t len) noexcept = 0;
  /// "socket" or "vm".
  virtual std::string_view kind() const noexcept = 0;
  /// The windows the agent exported (as announced when connecting).
  virtual const std::vector<WindowDesc>& windows() const noexcept = 0;
  /// The agent's pid as it announced it.
  virtual int remote_pid() const noexcept = 0;

  MemoryTransport() = default;
  MemoryTransport(const MemoryTransport&) = delete;
  MemoryTransport& operator=(const MemoryTransport&) = delete;
};

}  // namespace shmkit::transport
