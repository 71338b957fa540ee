/// shmkit::Lock, RLock and Condition: futex-based, process-shared locks that survive the death of
/// their owner.
///
/// WHY THE KERNEL'S ROBUST LIST (and not a pid liveness check, and not FUTEX_LOCK_PI)
/// -------------------------------------------------------------------------------
/// * A liveness check (kill(pid, 0), tgkill, even pid + start time) can only be run by a waiter that
///   wakes up to look, so it needs a polling interval, and a bare tid is recycled within seconds on
///   a machine with pid_max 32768. The kernel's robust-futex list has neither problem: when a thread
///   exits for any reason (return, pthread_exit, SIGKILL, exec) the kernel itself walks the list the
///   thread registered, and for every futex word whose low 30 bits still hold that thread's id it
///   atomically replaces the owner with FUTEX_OWNER_DIED and wakes one waiter. Detection therefore
///   happens at the moment of death, in the dying thread's own context, before its tid can be
///   reused, and without a timer.
/// * glibc already registers one list head per thread (set_robust_list is a per-thread singleton)
///   and links its own robust pthread mutexes into it. We do not replace that head (that would break
///   every robust pthread mutex in the process); instead each Lock is laid out exactly like glibc's
///   x86-64 robust mutex — futex word at offset 0, a {prev, next} node at offset 24, so that the
///   head's futex_offset (-32: word = &node.next - 32) is right for it too — and is linked into and
///   out of glibc's list with glibc's own algorithm (ENQUEUE_MUTEX / DEQUEUE_MUTEX in
///   nptl/descr.h and pthread_mutex_lock.c), including list_op_pending around every edit.
///   Verified on this machine (Linux 6.18, glibc 2.36); the layout facts are static_asserts below
///   and init_thread_state() checks futex_offset at run time and aborts with a message if it differs.
/// * FUTEX_LOCK_PI / FUTEX_UNLOCK_PI would also give owner-death handling (through the same list,
///   with bit 0 set in the entry), but a PI futex hands the lock directly to the top sleeping waiter
///   on every contended unlock: no lock stealing, so two processes incrementing a counter under the
///   lock pay a sleep, a wake-up and a context switch per hand-off (a lock convoy: hundreds of
///   times slower than this design under contention; figures in docs/PERFORMANCE_NOTES.md).
///   Priority inheritance buys nothing for SCHED_OTHER processes, and a PI condition variable would need FUTEX_WAIT_REQUEUE_PI. So: plain
///   futex words with FUTEX_WAIT/FUTEX_WAKE, robust through the list.
///
/// THE LOCK WORD (offset 0, 32 bits; the kernel reads and writes it)
///   bits 0..29  owner thread id (0 = no owner)                      FUTEX_TID_MASK
///   bit 30      the previous owner died; data not yet repaired       FUTEX_OWNER_DIED
///   bit 31      threads may be sleeping in FUTEX_WAIT on this word   FUTEX_WAITERS
///   kNotRecoverable = OWNER_DIED | TID_MASK: a dead owner's lock was released without
///   mark_consistent(); no tid is ever 0x3fffffff (PID_MAX_LIMIT is 2^22), so the kernel never
///   touches this value and every later acquire reports not_recoverable.
/// INVARIANT1: word & TID_MASK == t (t != 0, word != kNotRecoverable) <=> thread t holds the lock,
///             and then (and only then) the lock's node is in t's robust list, or t's
///             list_op_pending points at it.
/// INVARIANT2: a thread sleeps in FUTEX_WAIT on the word only on a value with WAITERS set; an unlock
///             of a word with WAITERS releases it to WAITERS (owner 0) and wakes one sleeper, and
///             clears the flag only if that wake found nobody; a woken thread takes the lock with
///             WAITERS set again (it cannot know whether others still sleep).
/// INVARIANT3: word & OWNER_DIED <=> the data the lock protects may be inconsistent; it is cleared only
///             by mark_consistent() of the owner.
///
/// WHAT OWNER DEATH LOOKS LIKE
///   acquire()/try_acquire() return LockResult::owner_died: the caller holds the lock, must repair
///   the protected data and call mark_consistent() before unlock(). An unlock() without
///   mark_consistent() makes the lock not recoverable: that acquire and every later one returns
///   LockResult::not_recoverable (and wakes every waiter so they learn it too).
///
/// LIMITS (documented, not checked on the fast path)
///   * Not async-signal-safe: do not lock from a signal handler that may interrupt a lock or unlock
///     in the same thread (the robust list edit is not reentrant; glibc's robust mutexes share this).
///   * A held lock must not be unmapped or destroyed: the node stays in the owner's robust list, and
///     the kernel would write to whatever is mapped there when the owner dies. The kernel walks at
///     most 2048 entries per thread (ROBUST_LIST_LIMIT) including glibc's own robust mutexes.
///   * The list node holds raw pointers in the OWNER's address space: the one exception to "offsets,
///     not pointers" in shared memory, imposed by the kernel ABI. Only the owner thread (and the
///     kernel, walking that owner's list in that owner's address space) ever reads them.
///   * fork(): the child starts with an empty robust list (glibc resets it in the child) and holds
///     none of the parent's locks, whichever parent thread held them (the word names a parent
///     thread): in the child, acquire() waits for the parent's owner like any other process would,
///     unlock() throws "not the owner", and if the parent's owner dies the child gets owner_died.
///     The cached thread id is reset by a pthread_atfork child handler. Processes made with raw
///     clone()/syscall(SYS_fork)/_Fork() skip that handler and must not use these locks.
///   * Words the kernel never cleaned up (forged by a hostile writer, or left in a segment that
///     outlived its kernel, e.g. file-backed across a reboot): a blocking acquire probes the owner
///     once, after spinning and before its first sleep (kill(tid, 0) via sys::thread_exists); an
///     owner that does not exist is taken over as owner_died. A word naming the caller's own tid
///     that the caller never linked is taken over likewise (and is not "held" by it). A ghost tid
///     that a live unrelated thread now wears still blocks (only "does not exist" is conclusive):
///     the segment layer should re-initialise locks of a segment from an earlier boot.
///   * All processes using a lock must share one pid namespace (the word holds namespace-local
///     tids; the probe above would misjudge a tid from another namespace).
#pragma once

#include <linux/futex.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <string_view>
#include <type_traits>

#include "shmkit/sys/error.hpp"
#include "shmkit/sys/futex_word.hpp"

namespace shmkit {

/// The outcome of acquiring a lock.
enum class LockResult : int {
  acquired,         // the caller holds the lock
  owner_died,       // the caller holds the lock; the previous owner died: repair, mark_consistent()
  not_recoverable,  // the caller does NOT hold the lock: a dead owner's data was never repaired
  timed_out,        // the caller does NOT hold the lock: the deadline passed
  would_block,      // the caller does NOT hold the lock: try_acquire() found it held
};
std::string_view to_string(LockResult r) noexcept;

/// The outcome of Condition::wait (the lock is held again on every value but not_recoverable).
enum class WaitResult : int {
  notified,         // woken by notify (or spuriously): re-check the predicate
  timed_out,        // the deadline passed (the lock is held again)
  owner_died,       // re-acquiring found the lock's owner dead: repair, mark_consistent()
  not_recoverable,  // the lock could not be re-acquired; it is NOT held
};
std::string_view to_string(WaitResult r) noexcept;

class Condition;

namespace locks_detail {

inline constexpr std::uint32_t kTidMask = FUTEX_TID_MASK;      // 0x3fffffff
inline constexpr std::uint32_t kOwnerDied = FUTEX_OWNER_DIED;  // 0x40000000
inline constexpr std::uint32_t kWaiters = FUTEX_WAITERS;       // 0x80000000
inline constexpr std::uint32_t kNotRecoverable = kOwnerDied | kTidMask;
static_assert(kTidMask == 0x3fffffffu && kOwnerDied == 0x40000000u && kWaiters == 0x80000000u);

/// struct robust_list_head of <linux/futex.h>, as glibc embeds it in struct pthread (robust_head),
/// preceded there by `void* robust_prev`, so that head-8 .. head+8 reads as a {prev, next} node.
struct RobustListHead {
  void* list;                // first entry (points at an entry's `next` field), or this head
  long futex_offset;         // word address = entry + futex_offset
  void* list_op_pending;     // the entry being locked/unlocked right now, or null
};
static_assert(sizeof(RobustListHead) == 3 * sizeof(void*));

/// glibc's value for futex_offset on x86-64: offsetof(__lock) - offsetof(__list.__next) = 0 - 32.
inline constexpr long kFutexOffset = -32;

/// Per-thread cache: the thread id the lock word stores and glibc's robust list head. Reset in a
/// fork child by a pthread_atfork handler (the child's one thread has a new tid).
struct ThreadState {
  std::uint32_t tid;     // 0 = not initialised in this thread yet
  RobustListHead* head;  // this thread's glibc robust list head (get_robust_list)
};
/// initial-exec: one %fs-relative load on the fast path, no __tls_get_addr call. (If shmkit is ever
/// built as a shared library that programs dlopen(), this needs the static TLS surplus glibc keeps.)
inline constinit thread_local ThreadState tls_thread_state __attribute__((tls_model("initial-exec"))) = {0, nullptr};

/// Fills tls_thread_state (gettid, get_robust_list, checks futex_offset); aborts with a message if
/// glibc's robust list is unusable (then no lock could be robust, and silently not being robust
/// would hang processes later).
ThreadState& init_thread_state() noexcept;

inline ThreadState& thread_state() noexcept {
  ThreadState& ts = tls_thread_state;
  if (ts.tid == 0) [[unlikely]] return init_thread_state();
  return ts;
}

/// Orders this thread's plain stores to its robust list against its own lock-word RMWs. The only
/// other reader of the list is the kernel, and it reads the list only in this same thread's context
/// (at exit or exec, after the thread stopped running user code), so program order is enough and
/// only the compiler must be stopped from reordering: a signal fence, not a thread fence.
inline void list_fence() noexcept { std::atomic_signal_fence(std::memory_order_seq_cst); }

inline void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

/// The 40-byte robust lock core shared by Lock and RLock (and used by Condition). Standard layout;
/// all-zero bytes == unlocked, consistent, not linked.
struct RobustCore {
  std::atomic<std::uint32_t> word{0};  // offset 0: the futex word (see the file comment)
  std::uint32_t depth = 0;             // offset 4: RLock recursion depth; owner-only (0 for Lock)
  std::uint32_t reserved[4] = {};      // offsets 8..23: glibc's __owner/__nusers/__kind/__spins
  void* prev = nullptr;                // offset 24: robust list node (owner's address space)
  void* next = nullptr;                // offset 32: what robust list entries point at

  /// glibc ENQUEUE_MUTEX_BOTH(mutex, 0): push this node at the front of the thread's list. Entries
  /// may carry bit 0 (glibc's PI robust mutexes); it is masked when an entry is used as an address
  /// and copied unchanged otherwise. The head's list field is written last: that single store makes
  /// the node reachable for the kernel (before it, list_op_pending covers the lock).
  ///
  /// One deviation, for the uncontended path's sake: glibc's robust_prev (the head's "prev", written
  /// by ENQUEUE/DEQUEUE when the list is or becomes empty) is never read by glibc or the kernel — the
  /// first entry's prev points at the head itself — so we skip that store (and the matching one in
  /// unlink()) when the list is empty. Every other prev is kept exactly as glibc keeps it.
  void link(RobustListHead* h) noexcept {
    void* first = h->list;
    if (first != h) {
      auto* first_prev = reinterpret_cast<void**>(
          (reinterpret_cast<std::uintptr_t>(first) & ~std::uintptr_t{1}) - sizeof(void*));
      *first_prev = &next;  // the old first entry's prev
    }
    /// glibc: prev = (void*)&THREAD_SELF->robust_head == &head->list. Skipped when the node already
    /// holds these values (a thread re-locking the lock it used last): a load is cheaper than a
    /// store that the next locked instruction would have to drain.
    if (next != first || prev != h) {
      next = first;
      prev = h;
    }
    list_fence();
    h->list = &next;
  }
  /// glibc DEQUEUE_MUTEX: the store to prev's `next` is the one that takes the node out of the
  /// chain the kernel walks (list_op_pending covers the lock around it).
  void unlink(RobustListHead* h) noexcept {
    void* n = next;
    void* p = prev;
    if (n != h) {  // the head's robust_prev is write-only (see link())
      auto* next_prev = reinterpret_cast<void**>(
          (reinterpret_cast<std::uintptr_t>(n) & ~std::uintptr_t{1}) - sizeof(void*));
      *next_prev = p;
    }
    auto* prev_next = reinterpret_cast<void**>(reinterpret_cast<std::uintptr_t>(p) & ~std::uintptr_t{1});
    *prev_next = n;
  }

  /// Whether this node is in this thread's robust list (a walk; the list is short: the locks this
  /// thread holds). Bounded like the kernel's walk (ROBUST_LIST_LIMIT).
  bool linked_in(const RobustListHead* h) const noexcept {
    const std::uintptr_t head = reinterpret_cast<std::uintptr_t>(h);
    const std::uintptr_t self = reinterpret_cast<std::uintptr_t>(&next);
    std::uintptr_t e = reinterpret_cast<std::uintptr_t>(h->list) & ~std::uintptr_t{1};
    for (int n = 0; e != head && n < 2048; ++n) {
      if (e == self) return true;
      e = reinterpret_cast<std::uintptr_t>(*reinterpret_cast<void* const*>(e)) & ~std::uintptr_t{1};
    }
    return false;
  }
  /// The word names this thread AND this thread linked the lock (INVARIANT1). The second half
  /// rejects a word that merely contains our tid — forged, or left by a thread whose id we now
  /// wear in a segment the kernel never cleaned up (it outlived a reboot): unlocking such a lock
  /// would "unlink" pointers nobody wrote. Cheap in the usual case: the lock locked last is first.
  bool held_by(const ThreadState& ts) const noexcept {
    return owned_by(ts) && (ts.head->list == &next || linked_in(ts.head));
  }

  bool owned_by(const ThreadState& ts) const noexcept {
    /// relaxed: if this thread owns the lock it wrote its tid itself (coherence lets it read its own
    /// latest store); any other value, however stale, is not this thread's tid while it is not the
    /// owner, because its own releasing store comes after any store of its tid.
    return (word.load(std::memory_order_relaxed) & kTidMask) == ts.tid;
  }

  /// One CAS 0 -> tid; on success the node is linked. On failure list_op_pending is left pointing at
  /// this lock: the caller continues in acquire_slow(), which keeps it so until it returns.
  ///
  /// INVARIANT6 (this thread's list_op_pending): null, or the node of a lock this thread is
  /// locking/unlocking right now, or the node of a lock this thread holds. The fast path leaves it
  /// on the lock just acquired instead of clearing it (one store less: stores before the next
  /// locked instruction must drain, and the uncontended path is a handful of them). That is
  /// harmless: the kernel processes a pending entry once (skipping it during the list walk), acts
  /// only on a word that names the dying thread, and the lock stays mapped while held. release()
  /// then finds it already set, and clears it after the word is released — never leaving it on a
  /// lock this thread no longer holds, whose memory may be reused for anything.
  bool acquire_fast(ThreadState& ts) noexcept {
    RobustListHead* h = ts.head;
    h->list_op_pending = &next;  // dying between the CAS and link() must still be seen
    list_fence();
    std::uint32_t expected = 0;
    /// acquire: pairs with the release in release()/release_slow() of the previous owner.
    if (!word.compare_exchange_strong(expected, ts.tid, std::memory_order_acquire,
                                      std::memory_order_relaxed)) [[unlikely]]
      return false;
    link(h);
    return true;
  }

  /// Precondition: this thread owns the lock (owned_by(ts)). Unlinks, then one CAS tid -> 0.
  void release(ThreadState& ts) noexcept {
    RobustListHead* h = ts.head;
    if (h->list_op_pending != &next) h->list_op_pending = &next;  // usually still set: INVARIANT6
    list_fence();
    unlink(h);
    list_fence();
    std::uint32_t expected = ts.tid;
    /// release: publishes the critical section to the next acquirer (its acquire CAS).
    if (!word.compare_exchange_strong(expected, 0, std::memory_order_release,
                                      std::memory_order_relaxed)) [[unlikely]]
      release_slow(expected);
    list_fence();
    h->list_op_pending = nullptr;  // kept until after the wake: if we die before it, the kernel wakes
  }

  /// Out of line: contention, owner death, timeouts.
  LockResult acquire_slow(ThreadState& ts, sys::Deadline deadline, bool try_only) noexcept;
  void release_slow(std::uint32_t word_now) noexcept;  // word_now: our tid | WAITERS and/or OWNER_DIED
  /// Releases an owned, inconsistent lock back into the "owner died, not held" state (used when a
  /// Lockable-style call refuses to hand inconsistent data to a caller that cannot repair it).
  void abandon_inconsistent(ThreadState& ts) noexcept;
  void mark_consistent(ThreadState& ts) noexcept;
  [[noreturn]] void throw_not_owner(const char* what) const;
  /// For lock()/try_lock(): owner_died -> abandon + throw owner_dead; not_recoverable -> throw.
  [[noreturn]] void throw_for(LockResult r, const char* what, ThreadState& ts);
};
static_assert(std::is_standard_layout_v<RobustCore>);
static_assert(offsetof(RobustCore, word) == 0, "the kernel finds the word at entry + futex_offset");
static_assert(offsetof(RobustCore, prev) == 24 && offsetof(RobustCore, next) == 32,
              "glibc x86-64 robust mutex layout: __list at offset 24, futex_offset -32");
static_assert(static_cast<long>(offsetof(RobustCore, word)) - static_cast<long>(offsetof(RobustCore, next)) ==
              kFutexOffset);
static_assert(sizeof(RobustCore) == 40 && alignof(RobustCore) == 8);

/// Deadline conversions for the std-style timed calls (saturating: a huge duration = no deadline).
template <class Rep, class Period>
sys::Deadline deadline_after(const std::chrono::duration<Rep, Period>& d) noexcept {
  using namespace std::chrono;
  const auto now = sys::Clock::now();
  if (d <= duration<Rep, Period>::zero()) return now;
  if (duration<double>(d).count() > 1e9) return sys::kNoDeadline;  // ~31 years
  return now + ceil<sys::Clock::duration>(d);
}
template <class C, class D>
sys::Deadline deadline_at(const std::chrono::time_point<C, D>& tp) noexcept {
  if constexpr (std::is_same_v<C, sys::Clock>) {
    if (tp.time_since_epoch() >= sys::kNoDeadline.time_since_epoch()) return sys::kNoDeadline;
    return std::chrono::time_point_cast<sys::Clock::duration>(tp);
  } else {
    return deadline_after(tp - C::now());
  }
}

}  // namespace locks_detail

/// A mutex in shared memory (or anywhere), robust to its owner's death.
///
/// The enum API (acquire / try_acquire) is primary: it returns owner_died as its own value.
/// The Lockable API (lock / try_lock / try_lock_for / try_lock_until) is for std::lock_guard,
/// std::unique_lock and std::scoped_lock, which have no way to report "you now hold inconsistent
/// data". Its policy: it NEVER returns with an inconsistent lock held. When it finds the previous
/// owner dead it puts the lock straight back into the owner-died state (not held; the next
/// acquire() still gets owner_died, the next waiter is woken) and throws
/// shmkit::Error{Errc::owner_dead}; when the lock is not recoverable it throws
/// shmkit::Error{Errc::not_recoverable}. So code that cannot repair never silently works on torn
/// data, nothing is left locked behind an exception, and a repairer using acquire() still can.
/// lock() by the thread that already holds the Lock throws Error{Errc::invalid_argument}
/// (acquire() aborts with a message instead: it is noexcept and would otherwise deadlock).
class Lock {
 public:
  constexpr Lock() noexcept = default;
  Lock(const Lock&) = delete;
  Lock& operator=(const Lock&) = delete;

  /// Blocks until the lock is acquired or `deadline` (CLOCK_MONOTONIC) passes.
  [[nodiscard]] LockResult acquire(sys::Deadline deadline = sys::kNoDeadline) noexcept {
    locks_detail::ThreadState& ts = locks_detail::thread_state();
    if (core_.acquire_fast(ts)) [[likely]] return LockResult::acquired;
    return core_.acquire_slow(ts, deadline, false);
  }
  /// Never sleeps: would_block when another thread holds the lock (or this one does).
  [[nodiscard]] LockResult try_acquire() noexcept {
    locks_detail::ThreadState& ts = locks_detail::thread_state();
    if (core_.acquire_fast(ts)) [[likely]] return LockResult::acquired;
    return core_.acquire_slow(ts, sys::kNoDeadline, true);
  }
  /// After owner_died, once the protected data is repaired: the next unlock() releases a consistent
  /// lock. A no-op when the lock is consistent or not held by this thread.
  void mark_consistent() noexcept { core_.mark_consistent(locks_detail::thread_state()); }
  /// Throws Error{Errc::invalid_argument} when this thread does not hold the lock.
  void unlock() {
    locks_detail::ThreadState& ts = locks_detail::thread_state();
    if (!core_.held_by(ts)) [[unlikely]] core_.throw_not_owner("shmkit::Lock::unlock");
    core_.release(ts);
  }

  /// Lockable / TimedLockable (see the class comment for what they do when the owner died).
  void lock() {
    locks_detail::ThreadState& ts = locks_detail::thread_state();
    if (core_.acquire_fast(ts)) [[likely]] return;
    if (core_.held_by(ts)) {
      ts.head->list_op_pending = nullptr;
      throw Error(Errc::invalid_argument,
                  "shmkit::Lock::lock: this thread already holds the lock (Lock is not recursive; "
                  "use shmkit::RLock)");
    }
    finish_lockable(core_.acquire_slow(ts, sys::kNoDeadline, false), ts, "shmkit::Lock::lock");
  }
  [[nodiscard]] bool try_lock() {
    return finish_lockable(try_acquire(), locks_detail::thread_state(), "shmkit::Lock::try_lock");
  }
  template <class Rep, class Period>
  [[nodiscard]] bool try_lock_for(const std::chrono::duration<Rep, Period>& d) {
    return finish_lockable(acquire(locks_detail::deadline_after(d)), locks_detail::thread_state(),
                           "shmkit::Lock::try_lock_for");
  }
  template <class C, class D>
  [[nodiscard]] bool try_lock_until(const std::chrono::time_point<C, D>& tp) {
    return finish_lockable(acquire(locks_detail::deadline_at(tp)), locks_detail::thread_state(),
                           "shmkit::Lock::try_lock_until");
  }

  bool held_by_this_thread() const noexcept { return core_.held_by(locks_detail::thread_state()); }
  /// The raw word, for diagnostics and tests (owner tid, OWNER_DIED, WAITERS bits).
  std::uint32_t debug_word() const noexcept { return core_.word.load(std::memory_order_relaxed); }

 private:
  friend class Condition;
  bool finish_lockable(LockResult r, locks_detail::ThreadState& ts, const char* what) {
    if (r == LockResult::acquired) return true;
    if (r == LockResult::timed_out || r == LockResult::would_block) return false;
    core_.throw_for(r, what, ts);
  }
  locks_detail::RobustCore core_;
};
static_assert(std::is_standard_layout_v<Lock> && sizeof(Lock) == 40 && alignof(Lock) == 8);

/// A recursive robust mutex: the owning thread may acquire it again; each acquire needs an unlock.
/// Same owner-death model as Lock (the kernel neither knows nor cares about the depth: a dead owner
/// holding it 5 deep leaves it owner-died, and the next acquirer starts at depth 1). A recursive
/// acquire while the lock is still inconsistent returns owner_died again (the data is still torn),
/// but the Lockable lock()/try_lock() never throw for a recursive acquire (an outer frame already
/// holds the lock and is responsible for the repair). unlock() by a thread that does not hold it
/// throws Error{Errc::invalid_argument}.
class RLock {
 public:
  constexpr RLock() noexcept = default;
  RLock(const RLock&) = delete;
  RLock& operator=(const RLock&) = delete;

  [[nodiscard]] LockResult acquire(sys::Deadline deadline = sys::kNoDeadline) noexcept {
    locks_detail::ThreadState& ts = locks_detail::thread_state();
    if (core_.acquire_fast(ts)) [[likely]] {
      core_.depth = 1;
      return LockResult::acquired;
    }
    return acquire_contended(ts, deadline, false);
  }
  [[nodiscard]] LockResult try_acquire() noexcept {
    locks_detail::ThreadState& ts = locks_detail::thread_state();
    if (core_.acquire_fast(ts)) [[likely]] {
      core_.depth = 1;
      return LockResult::acquired;
    }
    return acquire_contended(ts, sys::kNoDeadline, true);
  }
  void mark_consistent() noexcept { core_.mark_consistent(locks_detail::thread_state()); }
  void unlock() {
    locks_detail::ThreadState& ts = locks_detail::thread_state();
    if (!core_.held_by(ts)) [[unlikely]] core_.throw_not_owner("shmkit::RLock::unlock");
    if (--core_.depth != 0) return;
    core_.release(ts);
  }

  void lock() {
    locks_detail::ThreadState& ts = locks_detail::thread_state();
    LockResult r = acquire();
    if (r == LockResult::acquired || (r == LockResult::owner_died && core_.depth > 1)) return;
    core_.throw_for(r, "shmkit::RLock::lock", ts);
  }
  [[nodiscard]] bool try_lock() { return finish_lockable(try_acquire(), "shmkit::RLock::try_lock"); }
  template <class Rep, class Period>
  [[nodiscard]] bool try_lock_for(const std::chrono::duration<Rep, Period>& d) {
    return finish_lockable(acquire(locks_detail::deadline_after(d)), "shmkit::RLock::try_lock_for");
  }
  template <class C, class D>
  [[nodiscard]] bool try_lock_until(const std::chrono::time_point<C, D>& tp) {
    return finish_lockable(acquire(locks_detail::deadline_at(tp)), "shmkit::RLock::try_lock_until");
  }

  bool held_by_this_thread() const noexcept { return core_.held_by(locks_detail::thread_state()); }
  /// Recursion depth; meaningful only to the owning thread.
  std::uint32_t depth() const noexcept { return held_by_this_thread() ? core_.depth : 0; }
  std::uint32_t debug_word() const noexcept { return core_.word.load(std::memory_order_relaxed); }

 private:
  friend class Condition;
  LockResult acquire_contended(locks_detail::ThreadState& ts, sys::Deadline deadline,
                               bool try_only) noexcept;
  bool finish_lockable(LockResult r, const char* what) {
    if (r == LockResult::acquired || (r == LockResult::owner_died && core_.depth > 1)) return true;
    if (r == LockResult::timed_out || r == LockResult::would_block) return false;
    core_.throw_for(r, what, locks_detail::thread_state());
  }
  locks_detail::RobustCore core_;
};
static_assert(std::is_standard_layout_v<RLock> && sizeof(RLock) == 40 && alignof(RLock) == 8);

/// A condition variable for Lock and RLock, in shared memory or anywhere. All-zero bytes == a fresh
/// condition. No lost wake-up: a notify that happens after a waiter released its lock inside wait()
/// wakes that waiter (or makes it not sleep at all).
///
/// INVARIANT4: seq changes (increments) on every notify; a waiter sleeps only while seq still holds
///             the value it read while holding the lock.
/// INVARIANT5: waiters >= the number of threads between "registered" and "left" in wait(); it can
///             exceed it forever when a waiter dies inside wait() (costing notify one futex_wake
///             system call each, nothing else).
///
/// wait(lock, deadline) is the primary API (returns WaitResult; the lock is held again on return
/// except for not_recoverable; an RLock held recursively is fully released while waiting and comes
/// back at the same depth). If the lock is held inconsistent (after owner_died, before
/// mark_consistent) waiting releases it and so makes it not recoverable, as with pthread. A waiter
/// that dies while blocked in wait() does not hold the lock (it was released before sleeping); one
/// that dies after re-acquiring leaves it owner-died like any owner.
///
/// The std-style overloads take std::unique_lock<Lock|RLock>. On owner death they follow the
/// Lockable policy of Lock: the lock is put back into the owner-died state, the unique_lock is
/// released (no longer owns) and shmkit::Error{Errc::owner_dead} is thrown; on not_recoverable the
/// unique_lock is released and Error{Errc::not_recoverable} is thrown.
///
/// notify_all wakes every waiter (no requeue onto the lock word: requeued waiters would sleep on a
/// robust word without having set FUTEX_WAITERS).
class Condition {
 public:
  constexpr Condition() noexcept = default;
  Condition(const Condition&) = delete;
  Condition& operator=(const Condition&) = delete;

  /// Throws Error{Errc::invalid_argument} when this thread does not hold `lock`.
  WaitResult wait(Lock& lock, sys::Deadline deadline = sys::kNoDeadline) {
    return wait_core(lock.core_, deadline, "shmkit::Condition::wait");
  }
  WaitResult wait(RLock& lock, sys::Deadline deadline = sys::kNoDeadline) {
    return wait_core(lock.core_, deadline, "shmkit::Condition::wait");
  }

  template <class L>
  void wait(std::unique_lock<L>& lk) {
    finish(lk, wait(*lk.mutex()));
  }
  template <class L, class Pred>
  void wait(std::unique_lock<L>& lk, Pred pred) {
    while (!pred()) wait(lk);
  }
  template <class L, class C, class D>
  std::cv_status wait_until(std::unique_lock<L>& lk, const std::chrono::time_point<C, D>& tp) {
    WaitResult r = wait(*lk.mutex(), locks_detail::deadline_at(tp));
    finish(lk, r);
    return r == WaitResult::timed_out ? std::cv_status::timeout : std::cv_status::no_timeout;
  }
  template <class L, class C, class D, class Pred>
  bool wait_until(std::unique_lock<L>& lk, const std::chrono::time_point<C, D>& tp, Pred pred) {
    const sys::Deadline deadline = locks_detail::deadline_at(tp);
    while (!pred()) {
      WaitResult r = wait(*lk.mutex(), deadline);
      finish(lk, r);
      if (r == WaitResult::timed_out) return pred();
    }
    return true;
  }
  template <class L, class Rep, class Period>
  std::cv_status wait_for(std::unique_lock<L>& lk, const std::chrono::duration<Rep, Period>& d) {
    WaitResult r = wait(*lk.mutex(), locks_detail::deadline_after(d));
    finish(lk, r);
    return r == WaitResult::timed_out ? std::cv_status::timeout : std::cv_status::no_timeout;
  }
  template <class L, class Rep, class Period, class Pred>
  bool wait_for(std::unique_lock<L>& lk, const std::chrono::duration<Rep, Period>& d, Pred pred) {
    return wait_until(lk, locks_detail::deadline_after(d), std::move(pred));
  }

  void notify_one() noexcept;
  void notify_all() noexcept;

 private:
  WaitResult wait_core(locks_detail::RobustCore& core, sys::Deadline deadline, const char* what);
  template <class L>
  void finish(std::unique_lock<L>& lk, WaitResult r) {
    if (r == WaitResult::notified || r == WaitResult::timed_out) return;
    locks_detail::RobustCore& core = lk.mutex()->core_;
    lk.release();  // from here the unique_lock does not own: it must not unlock on unwinding
    core.throw_for(r == WaitResult::owner_died ? LockResult::owner_died : LockResult::not_recoverable,
                   "shmkit::Condition::wait", locks_detail::thread_state());
  }

  std::atomic<std::uint32_t> seq_{0};      // futex word: INVARIANT4
  std::atomic<std::uint32_t> waiters_{0};  // INVARIANT5
};
static_assert(std::is_standard_layout_v<Condition> && sizeof(Condition) == 8);

}  // namespace shmkit
