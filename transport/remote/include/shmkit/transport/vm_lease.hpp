/// The vm lease: how an Agent keeps the promise of Agent::unexport_window() ("when this returns no
/// request is touching it any more") towards a VmTransport, which reads and writes the agent's
/// memory with process_vm_readv/writev without the agent taking part.
///
/// At connect time the client asks for a lease (memproto::ids::lease). The agent answers with a
/// lease page: a sealed memfd of one page, created for that client alone and passed with
/// SCM_RIGHTS, mapped by both. The agent writes the window table (a copy of its windows at that
/// moment) and later only the windows' `revoked` flags; the client writes only `in_flight`.
///
///   client, per transfer                        agent, unexport_window(a)
///   in_flight.fetch_add(1)       [seq_cst] (A)  revoked[a] = 1                   [seq_cst] (C)
///   if revoked[window]: refuse   [seq_cst] (B)  wait while in_flight != 0        [seq_cst] (D)
///   process_vm_readv/writev                     (or the client's connection hung up, or
///   in_flight.fetch_sub(1)       [release] (E)   io_timeout passed: the connection is shut down)
///
/// Dekker: (A)(B) and (C)(D) are seq_cst, so at least one side sees the other: either the client
/// sees revoked and refuses, or the agent sees in_flight != 0 and waits for (E), which releases the
/// finished transfer to the agent's load (D). INVARIANT1 (of the lease): once unexport_window()
/// returns, no transfer of a leased client touches the window. A revoked window stays revoked in
/// that lease (a window exported again later is not in it: the vm transport refuses it, -EFAULT).
///
/// The lease page is written by the other process: everything read from it is checked before use
/// (the magic, the count against the page's capacity, each window's range), and the memfd is
/// sealed against shrinking so neither side can make the other's access to it SIGBUS.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "shmkit/transport/memory_transport.hpp"
#include "shmkit/transport/splice_pipe.hpp"
#include "shmkit/transport/wire.hpp"

namespace shmkit::transport {

struct LeaseWindow {
  std::uint64_t address;              // written once by the agent, before the page is passed
  std::uint64_t length;               // INVARIANT2: address + length does not wrap (checked on attach)
  std::uint32_t access;               // memproto::WindowAccess bits
  std::uint32_t flags;                // memproto::WindowFlags bits (as in the Windows reply)
  std::atomic<std::uint32_t> revoked;  // 0, then 1 for ever; written by the agent only
};

inline constexpr std::size_t kLeasePageSize = 4096;
inline constexpr std::uint32_t kLeaseMagic = 0x45534c56;  // "VLSE"
inline constexpr std::size_t kLeaseMaxWindows = (kLeasePageSize - 128) / sizeof(LeaseWindow);

struct LeasePage {
  std::uint32_t magic;  // kLeaseMagic; magic and count are written once by the agent
  std::uint32_t count;  // INVARIANT3: count <= kLeaseMaxWindows (checked on attach)
  alignas(64) std::atomic<std::uint64_t> in_flight;  // transfers in progress; written by the client only
  alignas(64) LeaseWindow windows[kLeaseMaxWindows];
};
static_assert(sizeof(LeasePage) <= kLeasePageSize);
static_assert(std::atomic<std::uint64_t>::is_always_lock_free && std::atomic<std::uint32_t>::is_always_lock_free,
              "the lease page's atomics are shared between processes: they must be lock-free");

/// One process's mapping of a lease page (move-only; unmapped on destruction).
class LeaseMapping {
 public:
  LeaseMapping() = default;
  ~LeaseMapping();
  LeaseMapping(LeaseMapping&& o) noexcept : page_(o.page_) { o.page_ = nullptr; }
  LeaseMapping& operator=(LeaseMapping&& o) noexcept;
  LeaseMapping(const LeaseMapping&) = delete;
  LeaseMapping& operator=(const LeaseMapping&) = delete;

  explicit operator bool() const noexcept { return page_ != nullptr; }
  LeasePage* page() const noexcept { return page_; }

  /// Agent side: a new lease page holding `windows`, mapped here; *fd_out is its sealed memfd (the
  /// caller passes it to the client and closes it). Throws shmkit::Error (invalid_argument when
  /// there are more than kLeaseMaxWindows windows, or the system call that failed).
  static LeaseMapping create(std::span<const WindowDesc> windows, int* fd_out);
  /// Client side: maps the lease page `fd` (not closed here) after checking its size and seals,
  /// and copies its window table to `windows` after checking it (INVARIANT2, INVARIANT3).
  /// 0 or -errno (-EPROTO: not a valid lease page; `why` says what is wrong).
  [[nodiscard]] static int attach(int fd, LeaseMapping& out, std::vector<WindowDesc>& windows,
                                  std::string& why) noexcept;

  /// Agent side: marks every window starting at `address` revoked (C). True when there was one.
  bool revoke(std::uint64_t address) noexcept;
  void revoke_all() noexcept;
  /// Agent side, after revoke: waits until the client has no transfer in flight (D). 0; -EPIPE when
  /// its connection `sock` hung up first (a dead client transfers nothing); -ETIMEDOUT at deadline.
  [[nodiscard]] int wait_until_idle(int sock, Deadline deadline) const noexcept;

 private:
  explicit LeaseMapping(LeasePage* p) noexcept : page_(p) {}
  LeasePage* page_ = nullptr;
};

/// Agent side: the reply to a Lease request: its header, then one byte carrying `lease_fd`
/// (SCM_RIGHTS). 0 or -errno.
[[nodiscard]] int send_lease(int sock, wire::Tag tag, int lease_fd, Deadline deadline) noexcept;

/// Client side: asks the agent at `sock` (handshake done, nothing in flight) for a lease and maps
/// it. 0, or -errno with `why` saying what failed. After a failure the connection is still in step
/// with the agent only when *refused is set (the agent answered with an Error, read whole, or a
/// lease the client rejects); otherwise the stream position is lost.
[[nodiscard]] int request_lease(int sock, std::uint32_t max_message, Deadline deadline, LeaseMapping& out,
                                std::vector<WindowDesc>& windows, std::string& why, bool* refused) noexcept;

}  // namespace shmkit::transport
