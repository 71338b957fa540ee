/// VmTransport: a MemoryTransport with process_vm_readv/process_vm_writev, one system call per
/// transfer (one kernel copy, no agent involved in the data path). The kernel allows it when this
/// process may ptrace the target: same user and the target dumpable, or CAP_SYS_PTRACE.
///
/// The agent still matters: connect_memory() learns the pid and a cookie from it, gets a lease
/// (vm_lease.hpp) holding the window table, and the VmTransport keeps that connection open as a
/// liveness signal. Requests outside the leased windows, or in a window the agent has since
/// unexported, are refused here (-EFAULT / -EACCES), exactly as the agent would refuse them, so
/// both transports behave alike: once Agent::unexport_window() returns, no transfer of this
/// transport touches that window (each transfer is counted in the lease page while it runs, and
/// the agent waits for the count to drop; INVARIANT1 of vm_lease.hpp). This is a contract between
/// cooperating processes, not a security boundary: the kernel lets a ptrace-capable process read
/// and write any mapped memory of the target, and a client that ignores the lease is not stopped.
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
#include "shmkit/transport/vm_lease.hpp"

namespace shmkit::transport {

class VmTransport final : public MemoryTransport {
 public:
  /// `lease`: this client's lease page, mapped (LeaseMapping::attach), and `windows` its window
  /// table as checked there. `control`: the connection to the agent the lease came over, kept
  /// open and polled for hang-up.
  VmTransport(pid_t pid, LeaseMapping lease, std::vector<WindowDesc> windows,
              std::unique_ptr<MemoryTransport> control);

  [[nodiscard]] int read(std::uint64_t remote, void* local, std::size_t len) noexcept override;
  [[nodiscard]] int write(std::uint64_t remote, const void* local, std::size_t len) noexcept override;
  std::string_view kind() const noexcept override { return "vm"; }
  const std::vector<WindowDesc>& windows() const noexcept override { return windows_; }
  int remote_pid() const noexcept override { return pid_; }

  /// One process_vm_readv of len bytes at `remote` in `pid`: 0 or -errno (-EPERM / -EACCES when
  /// the kernel forbids it, -ESRCH when there is no such process).
  [[nodiscard]] static int probe(pid_t pid, std::uint64_t remote, void* local, std::size_t len) noexcept;

 private:
  /// Counts the transfer in the lease (A) and checks its range against the lease (B): 0 (the caller
  /// then transfers and calls end_transfer()) or -errno (nothing to end).
  int begin_transfer(std::uint64_t remote, std::size_t len, bool write) noexcept;
  void end_transfer() noexcept;
  int control_fd_ = -1;
  int agent_hung_up() const noexcept;  // -EPIPE once the control connection hung up, else 0
  pid_t pid_;
  LeaseMapping lease_;
  std::vector<WindowDesc> windows_;  // lease_'s table; windows_[i] is lease_.page()->windows[i]
  std::unique_ptr<MemoryTransport> control_;
};

}  // namespace shmkit::transport
