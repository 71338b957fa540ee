/// VmTransport: a MemoryTransport with process_vm_readv/process_vm_writev, one system call per
/// transfer (one kernel copy, no agent involved in the data path). The kernel allows it when this
/// process may ptrace the target: same user and the target dumpable, or CAP_SYS_PTRACE.
///
/// The agent still matters: connect_memory() learns the pid, the window list and a cookie from
/// it, and the VmTransport keeps that connection open as a liveness signal. Requests outside the
/// announced windows are refused here (-EFAULT / -EACCES), exactly as the agent would refuse them,
/// so both transports behave alike (the kernel itself would let a ptrace-capable process read any
/// mapped memory of the target: this check is a contract, not a security boundary).
///
/// Pid reuse: before each call the control connection is polled; when the agent is gone
/// (POLLHUP) the call is -EPIPE instead of touching whatever process later got that pid. A read
/// polls again after its transfer: a dying process closes its files before it becomes a zombie and
/// its pid can be reaped and reused, so no hang-up after the transfer proves the bytes came from
/// the agent (a read that raced the agent's death is -EPIPE, never another process's bytes). A
/// write cannot be taken back: its residual window is the few microseconds between the check and
/// the transfer, in which the agent would have to die, be reaped, and its pid be handed to a new
/// process of the same user (pid_max wraps in between). Children of the agent that inherited the
/// control socket keep it open and hide the hang-up: do not let them.
///
/// connect_memory() (connect_memory.hpp) picks this transport when a probe read of the agent's
/// cookie succeeds and says why it picked what it picked.
#pragma once

#include <sys/types.h>

#include <memory>
#include <vector>

#include "shmkit/transport/memory_transport.hpp"

namespace shmkit::transport {

class VmTransport final : public MemoryTransport {
 public:
  /// `control` (may be null): the connection to the agent, kept open and polled for hang-up.
  VmTransport(pid_t pid, std::vector<WindowDesc> windows, std::unique_ptr<MemoryTransport> control = nullptr);

  [[nodiscard]] int read(std::uint64_t remote, void* local, std::size_t len) noexcept override;
  [[nodiscard]] int write(std::uint64_t remote, const void* local, std::size_t len) noexcept override;
  std::string_view kind() const noexcept override { return "vm"; }
  const std::vector<WindowDesc>& windows() const noexcept override { return windows_; }
  int remote_pid() const noexcept override { return pid_; }

  /// One process_vm_readv of len bytes at `remote` in `pid`: 0 or -errno (-EPERM / -EACCES when
  /// the kernel forbids it, -ESRCH when there is no such process).
  [[nodiscard]] static int probe(pid_t pid, std::uint64_t remote, void* local, std::size_t len) noexcept;

 private:
  int check(std::uint64_t remote, std::size_t len, bool write) const noexcept;
  int control_fd_ = -1;
  int agent_hung_up() const noexcept;  // -EPIPE once the control connection hung up, else 0
  pid_t pid_;
  std::vector<WindowDesc> windows_;
  std::unique_ptr<MemoryTransport> control_;
};

}  // namespace shmkit::transport
