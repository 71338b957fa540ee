/// UringRing: one io_uring shared by many requesters, each with its own mailbox.
///
/// The Hemlock design's executor ring, for threads instead of actors:
///
///  * Submission, the design's three cases (UringRing::submit):
///      1. a free submission slot: it is taken, filled and handed to the kernel while the ring's
///         lock is held, so no other requester can see or reuse a half-filled slot;
///      2. the submission queue is full: flush it with io_uring_enter, then go on as in 1;
///      3. that io_uring_enter fails with EBUSY (the kernel wants completions reaped first): reap
///         the completion queue into the mailboxes, then retry.
///    stats() counts each case, so tests with tiny rings can show every one happened.
///  * Completion: each SQE's user_data names an in-flight record (slot index + generation) that
///    remembers the requester's mailbox and token. Whoever reaps copies each CQE out of the ring
///    into that record and links it onto that mailbox's queue: a requester only ever receives
///    completions of operations it submitted, and each exactly once. A stale or unknown user_data
///    (generation mismatch) is counted and dropped, never delivered to someone else.
///  * Reaping is leader/follower: a requester that waits on an empty mailbox becomes the reaper if
///    there is none (blocking in io_uring_enter without holding the lock), routes whatever arrives
///    and wakes the others; otherwise it sleeps until the reaper routes something. No extra thread,
///    so a single requester pays no thread hand-off. The reaper publishes the queued SQEs under
///    the lock and then submits them and waits in the same io_uring_enter (submit(..., false)
///    queues an operation to go with it: one system call carries the batch and the wait).
///  * CQ overflow loses nothing: the ring requires IORING_FEAT_NODROP (the kernel keeps overflowed
///    completions and hands them over when asked); without it in-flight operations are capped at the
///    CQ size so the CQ cannot overflow.
///
/// Memory handed to the kernel must not move while an operation is in flight: use a SpanArena
/// (register_buffer() registers one region as fixed buffer 0 for READ_FIXED/WRITE_FIXED).
///
/// Thread-safe: any number of threads may submit and wait, each on its own mailbox (a mailbox
/// belongs to one requester at a time). Operations must be single-shot (no multishot SQEs).
/// The kernel ties each operation to the thread that submitted it: when that thread exits, its
/// pending operations complete with -ECANCELED (callers that share operations across threads,
/// like UringTransport, submit them again).
#pragma once

#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <vector>

#include "shmkit/sys/uring.hpp"

namespace shmkit::transport {

/// A completion, copied out of the completion queue.
struct UringCompletion {
  std::uint64_t token = 0;  // the requester's value given at submission
  std::int32_t res = 0;     // the operation's result: >= 0, or -errno
  std::uint32_t flags = 0;  // CQE flags
};

class UringRing;

/// A requester's mailbox. Completions of operations submitted with it arrive here and only here.
/// It must be destroyed before its ring; its destructor waits for its outstanding operations
/// (the kernel may still be writing into their buffers).
class UringMailbox {
 public:
  explicit UringMailbox(UringRing& ring) noexcept : ring_(ring) {}
  ~UringMailbox();
  UringMailbox(const UringMailbox&) = delete;
  UringMailbox& operator=(const UringMailbox&) = delete;
  UringRing& ring() const noexcept { return ring_; }
  /// Operations submitted with this mailbox and not yet received from it.
  std::size_t outstanding() const noexcept;

 private:
  friend class UringRing;
  UringRing& ring_;
  /// Guarded by ring_.mu_. A FIFO of completed slots linked through Slot::next.
  /// INVARIANT5: outstanding_ = (in-flight slots naming this mailbox) + (slots on its queue).
  std::uint32_t head_ = UINT32_MAX, tail_ = UINT32_MAX;
  std::size_t outstanding_ = 0;
};

class UringRing {
 public:
  struct Options {
    unsigned sq_entries = 256;
    unsigned cq_entries = 0;        // 0: the kernel's default (2 * sq_entries)
    unsigned max_in_flight = 4096;  // in-flight records (submitted, not yet received)
  };
  struct Stats {
    std::uint64_t direct = 0;           // case 1: a free SQE was filled and submitted at once
    std::uint64_t flushed_full = 0;     // case 2: the SQ was full and io_uring_enter flushed it
    std::uint64_t ebusy_reaped = 0;     // case 3: io_uring_enter said EBUSY; reaped, retried
    std::uint64_t completions = 0;      // CQEs routed to mailboxes
    std::uint64_t overflow_flushes = 0; // times the kernel's overflow list was drained
    std::uint64_t stale = 0;            // CQEs whose user_data named no in-flight record
  };

  /// Sets up the ring. Throws shmkit::Error(Errc::unsupported) where io_uring is unavailable
  /// (ENOSYS, EPERM from kernel.io_uring_disabled or seccomp, EACCES), with the reason.
  UringRing() : UringRing(Options{}) {}
  explicit UringRing(Options opts);
  ~UringRing();
  UringRing(const UringRing&) = delete;
  UringRing& operator=(const UringRing&) = delete;

  /// Submits one operation: `prep(io_uring_sqe*)` fills the SQE (the ring then sets user_data).
  /// `flush` false leaves it in the SQ to go with the next flush (a batch); wait() flushes too.
  /// Returns 0, -EAGAIN when max_in_flight operations are outstanding, or -errno from the kernel.
  template <class Prep>
  [[nodiscard]] int submit(UringMailbox& mb, std::uint64_t token, Prep&& prep,
                           bool flush = true) noexcept {
    std::unique_lock lk(mu_);
    io_uring_sqe* sqe = nullptr;
    std::uint32_t slot = 0;
    int r = acquire_locked(lk, mb, token, &sqe, &slot);
    if (r < 0) return r;
    prep(sqe);
    return finish_locked(lk, sqe, slot, flush);
  }
  /// Hands every queued SQE to the kernel (cases 2/3 apply). 0 or -errno.
  [[nodiscard]] int flush() noexcept;

  /// Waits up to timeout_ms (< 0: forever) for the next completion addressed to mb, reaping the
  /// ring meanwhile. 0 with *out filled; -ETIME on timeout; -ENOMSG when mb has nothing outstanding.
  [[nodiscard]] int wait(UringMailbox& mb, UringCompletion* out, int timeout_ms = -1) noexcept;
  /// Non-blocking: reaps what the kernel has completed, then takes mb's next completion if any.
  /// `flush` false leaves queued SQEs for the next wait() to carry.
  [[nodiscard]] bool try_receive(UringMailbox& mb, UringCompletion* out, bool flush = true) noexcept;

  /// Registers [base, base+len) as fixed buffer 0 (for READ_FIXED/WRITE_FIXED). 0 or -errno
  /// (-ENOMEM under a small RLIMIT_MEMLOCK: callers fall back to plain READ/WRITE).
  [[nodiscard]] int register_buffer(void* base, std::size_t len) noexcept;
  bool has_fixed_buffer() const noexcept { return fixed_registered_; }

  unsigned sq_entries() const noexcept { return sq_entries_; }
  unsigned cq_entries() const noexcept { return cq_entries_; }
  bool nodrop() const noexcept { return nodrop_; }
  Stats stats() const noexcept;

  /// Testing seam: the next n flushes report -EBUSY without entering the kernel, as a kernel
  /// does when completions must be reaped first (kernels with IORING_FEAT_NODROP rarely do, so
  /// case 3 cannot otherwise be forced on demand).
  void inject_ebusy(unsigned n) noexcept;

 private:
  friend class UringMailbox;
  enum class SlotState : std::uint8_t { free, in_flight, done };
  struct Slot {
    UringMailbox* mb = nullptr;
    std::uint64_t token = 0;
    std::int32_t res = 0;
    std::uint32_t flags = 0;
    std::uint32_t gen = 0;               // bumped on every reuse: stale user_data never matches
    std::uint32_t next = UINT32_MAX;     // free list (state free) or mailbox queue (state done)
    SlotState state = SlotState::free;
  };
  /// user_data = gen << 32 | slot index. INVARIANT6: a CQE is routed iff its index < slots_.size(),
  /// that slot is in_flight and its gen equals the CQE's gen.
  static std::uint64_t user_data(std::uint32_t slot, std::uint32_t gen) noexcept {
    return (std::uint64_t{gen} << 32) | slot;
  }

  int acquire_locked(std::unique_lock<std::mutex>& lk, UringMailbox& mb, std::uint64_t token,
                     io_uring_sqe** sqe, std::uint32_t* slot) noexcept;
  int finish_locked(std::unique_lock<std::mutex>& lk, io_uring_sqe* sqe, std::uint32_t slot,
                    bool flush) noexcept;
  int flush_locked(std::unique_lock<std::mutex>& lk) noexcept;
  void flush_or_break_locked(std::unique_lock<std::mutex>& lk) noexcept;
  int enter_locked() noexcept;
  /// Case 3: make room by reaping (or waiting for the current reaper to do it).
  void reap_for_ebusy_locked(std::unique_lock<std::mutex>& lk) noexcept;
  /// Routes every available CQE (draining the kernel's overflow list too). Caller holds mu_ and is
  /// the only one touching the CQ (reaping_ was false, or it set it). Returns CQEs routed.
  unsigned reap_locked() noexcept;
  void route_locked(const io_uring_cqe& cqe) noexcept;
  bool pop_locked(UringMailbox& mb, UringCompletion* out) noexcept;
  void fail_all_locked(int err) noexcept;

  io_uring ring_{};
  unsigned sq_entries_ = 0, cq_entries_ = 0;
  bool nodrop_ = false, ext_arg_ = false, fixed_registered_ = false;

  mutable std::mutex mu_;            // guards everything below and every mailbox's queue
  std::condition_variable cv_;       // signalled whenever completions were routed
  std::vector<Slot> slots_;          // fixed size, never reallocated after construction
  std::uint32_t free_head_ = UINT32_MAX;
  std::uint32_t in_flight_ = 0;      // INVARIANT7: in_flight_ = count(slots in state in_flight)
  std::uint32_t max_in_flight_ = 0;  // <= cq_entries_ when !nodrop_
  unsigned queued_ = 0;              // SQEs filled but not yet handed to the kernel
  bool reaping_ = false;             // a thread owns the CQ side (INVARIANT8: at most one)
  int broken_ = 0;                   // a fatal -errno from io_uring_enter: everything fails
  unsigned inject_ebusy_ = 0;
  Stats stats_;
};

}  // namespace shmkit::transport
