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
///   every robust pthread mutex in the process); instead each thread links one private anchor into
///   glibc's list and hangs its shmkit entries behind it (locks_detail::ThreadState, THE CHAIN).
///   A Lock keeps glibc's x86-64 robust-mutex geometry — futex word at offset 0, the entry (`next`)
///   at offset 32 — so that the head's futex_offset (-32: word = entry - 32) is right for it too,
///   and every edit is covered by list_op_pending as in glibc (nptl/descr.h, ENQUEUE/DEQUEUE).
/// * Only `next` has to be in shared memory (the kernel's walk reads nothing else, and reads it at
///   the owner's death), and the owner never reads it back: it edits its chain from a private
///   record (INVARIANT7), so a process that can write the segment cannot steer the owner's writes,
///   and the node shows no private address of the owner (INVARIANT8). glibc's `prev` (offset 24)
///   is left unused.
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
///             and then (and only then) the lock's entry is in t's chain (t's private record and
///             the list the kernel walks, INVARIANT7), or t's list_op_pending points at it. Only
///             another process writing the word breaks it; t's unlock() then reports Errc::corrupt
///             and takes the entry out of its chain.
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
///     most 2048 entries per thread (ROBUST_LIST_LIMIT) including glibc's own robust mutexes; a
///     thread can have at most 256 shmkit entries linked at once (held locks plus Condition claim
///     slots), and aborts with a message beyond that.
///   * The entry's `next` holds a raw pointer in the OWNER's address space (another lock the owner
///     holds, or the entry itself): the one exception to "offsets, not pointers" in shared memory,
///     imposed by the kernel ABI. The owner never reads it back (INVARIANT7). What a peer that can
///     write the segment can still do with it: while the owner holds the lock, redirect the
///     kernel's walk at the owner thread's death, so that locks the owner acquired before this one
///     are not marked owner-died by the kernel (their waiters then find the dead owner by the
///     probe below, or not at all if they were already asleep), and so that the kernel marks
///     owner-died a 32-bit word of the dying thread's address space, 32 bytes before an address of
///     the peer's choosing, if that word's low 30 bits equal the dying thread's id. A process with
///     write access to a segment can in any case forge the lock words in it.
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

/// How many times a thread of this process, releasing a lock it held, found the lock's robust-list
/// link not as it had written it: another process wrote into the lock meanwhile (INVARIANT7 in
/// locks_detail). Each case is also logged (warn). The release itself is unaffected: the owner
/// never follows a link read from shared memory.
std::uint64_t robust_link_overwrites() noexcept;

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

/// A robust-list entry in this thread's OWN memory (thread-local storage, never a segment). Laid out
/// like every entry (word at entry + futex_offset, entry = &next) so that the kernel and glibc can
/// walk past it; its word is always 0, so the kernel never changes it. glibc writes `prev` when it
/// links or unlinks one of its own mutexes next to it; shmkit never reads `prev`.
struct PrivateAnchor {
  std::uint32_t word;      // offset 0: always 0 (names no thread)
  std::uint32_t unused[5];
  void* prev;              // offset 24: glibc's back link (glibc's __list.__prev)
  void* next;              // offset 32: the entry the kernel follows from here
};
static_assert(offsetof(PrivateAnchor, prev) == 24 && offsetof(PrivateAnchor, next) == 32);

/// How many shmkit robust entries (held locks, plus one claim slot per Condition this thread is
/// waiting on) one thread can have linked at once. The kernel walks at most 2048 entries anyway.
inline constexpr std::uint32_t kMaxChain = 256;

/// Per-thread state: the thread id the lock word stores, glibc's robust list head, and the private
/// record of the shmkit entries this thread linked (the "chain").
///
/// THE CHAIN. glibc's list is one singly linked chain that the kernel walks from the head at the
/// thread's death (following each entry's `next`, at most 2048 steps, then handling
/// list_op_pending). shmkit does not put its entries among glibc's: on its first lock operation a
/// thread links ONE private anchor into glibc's list, and every shmkit entry hangs behind it:
///     head -> (glibc mutexes locked later) -> anchor -> chain[linked-1] -> ... -> chain[0] -> END
/// END is chain[0] itself (a self-loop: the kernel walks it until its 2048-step limit — microseconds,
/// and only at the death of a thread that holds a shmkit lock — then handles list_op_pending; an
/// entry's word is acted on only while it names the dying thread, so once), because the anchor was linked when glibc's list was empty and glibc only ever
/// adds at the front, so nothing of glibc's can ever come after it. If the thread held glibc robust
/// mutexes at that moment, a second private anchor `tail` goes right behind `anchor` and END is
/// &tail.next (tail leads on to those mutexes).
///
/// INVARIANT7: chain[0..linked) (private memory, written only by this thread) is the exact sequence
///             of shmkit entries behind the anchor: anchor.next == chain[linked-1] (or END-of-empty:
///             the head, or &tail.next), and the `next` field of chain[i] == chain[i-1] for i > 0,
///             == END for i == 0 — as last WRITTEN by this thread. The `next` fields live in
///             segments that other processes can write; this thread never follows or trusts one:
///             every edit derives its target from chain[] and anchor (private), so a peer that
///             rewrites a link can misdirect only the kernel's walk at this thread's death, never
///             a write by this thread. An edit compares the removed entry's `next` with INVARIANT7
///             and reports a difference (robust_link_overwrites()).
/// INVARIANT8: no shmkit entry ever holds a private address: a shmkit `next` field holds another
///             entry of this chain (in a segment) or its own address, except that in the rare
///             second layout the oldest one holds &tail.next. glibc's head address appears nowhere
///             in shared memory.
///
/// Reset in a fork child by a pthread_atfork handler (the child's one thread has a new tid and
/// glibc gave it an empty list).
struct ThreadState {
  std::uint32_t tid;      // 0 = not initialised in this thread yet
  std::uint32_t linked;   // entries in chain[]
  RobustListHead* head;   // this thread's glibc robust list head (get_robust_list)
  void* end;              // null: the oldest entry links to itself; else &tail.next
  PrivateAnchor anchor;   // linked into glibc's list once per thread
  PrivateAnchor tail;     // linked only in the second layout (see THE CHAIN)
  void** chain[kMaxChain];  // the shmkit entries, oldest first (INVARIANT7)
};
/// initial-exec: one %fs-relative load on the fast path, no __tls_get_addr call. (If shmkit is ever
/// built as a shared library that programs dlopen(), this needs the static TLS surplus glibc keeps.)
inline constinit thread_local ThreadState tls_thread_state __attribute__((tls_model("initial-exec"))) = {};

/// Fills tls_thread_state (gettid, get_robust_list, checks futex_offset, links the anchor); aborts
/// with a message if glibc's robust list is unusable (then no lock could be robust, and silently
/// not being robust would hang processes later).
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

/// What the oldest entry `e` links to (END, INVARIANT7), and what the anchor links to when the chain
/// is empty.
inline void* chain_end_for(const ThreadState& ts, void** e) noexcept { return ts.end != nullptr ? ts.end : e; }
inline void* chain_empty_end(const ThreadState& ts) noexcept {
  return ts.end != nullptr ? ts.end : static_cast<void*>(ts.head);
}

[[noreturn]] void chain_full() noexcept;
/// Counts and logs a `next` field that is not what this thread last wrote there (INVARIANT7).
void report_overwritten_link(void** e, void* expected) noexcept;
bool chain_remove_inner(ThreadState& ts, void** e) noexcept;

/// Pushes entry `e` (the `next` field of a node in a segment) at the front of the chain. The store
/// to anchor.next, last, is the one that makes it reachable for the kernel (until then
/// list_op_pending covers it).
inline void chain_push(ThreadState& ts, void** e) noexcept {
  const std::uint32_t n = ts.linked;
  if (n == kMaxChain) [[unlikely]] chain_full();
  void* const link = n != 0 ? static_cast<void*>(ts.chain[n - 1]) : chain_end_for(ts, e);
  /// Skipped when the field already holds it (a thread re-locking the lock it used last): a load is
  /// cheaper than a store that the next locked instruction would have to drain.
  if (*e != link) *e = link;
  if (ts.chain[n] != e) ts.chain[n] = e;  // likewise
  ts.linked = n + 1;
  list_fence();
  ts.anchor.next = e;
}

/// Takes entry `e` out of the chain; false if this thread never linked it. The newest entry (the
/// usual case: locks released in reverse order) is one private store; an older one is one store
/// into its newer neighbour's `next` (a node this thread holds, so mapped), never through a
/// pointer read from shared memory.
inline bool chain_remove(ThreadState& ts, void** e) noexcept {
  const std::uint32_t n = ts.linked;
  if (n == 0 || ts.chain[n - 1] != e) [[unlikely]] return chain_remove_inner(ts, e);
  void* const successor = n > 1 ? static_cast<void*>(ts.chain[n - 2]) : chain_end_for(ts, e);
  if (*e != successor) [[unlikely]] report_overwritten_link(e, successor);
  ts.anchor.next = n > 1 ? static_cast<void*>(ts.chain[n - 2]) : chain_empty_end(ts);
  ts.linked = n - 1;
  return true;
}

/// Whether this thread linked entry `e` (INVARIANT7; newest first, then a scan of the few others).
inline bool chain_holds(const ThreadState& ts, void* const* e) noexcept {
  const std::uint32_t n = ts.linked;
  if (n != 0 && ts.chain[n - 1] == e) [[likely]] return true;
  for (std::uint32_t i = 0; i + 1 < n; ++i)
    if (ts.chain[i] == e) return true;
  return false;
}

/// The 40-byte robust lock core shared by Lock and RLock. Standard layout; all-zero bytes ==
/// unlocked, consistent, not linked.
struct RobustCore {
  std::atomic<std::uint32_t> word{0};  // offset 0: the futex word (see the file comment)
  std::uint32_t depth = 0;             // offset 4: RLock recursion depth; owner-only (0 for Lock)
  std::uint32_t reserved[4] = {};      // offsets 8..23: glibc's __owner/__nusers/__kind/__spins
  void* unused_prev = nullptr;         // offset 24: glibc's __list.__prev; shmkit neither writes nor reads it
  void* next = nullptr;                // offset 32: the entry; holds the owner's chain link (INVARIANT7/8)

  /// The word names this thread AND this thread linked the lock (INVARIANT1). The second half
  /// rejects a word that merely contains our tid — forged, or left by a thread whose id we now
  /// wear in a segment the kernel never cleaned up (it outlived a reboot). Cheap in the usual case:
  /// the lock locked last is the newest chain entry.
  bool held_by(const ThreadState& ts) const noexcept { return owned_by(ts) && chain_holds(ts, &next); }

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
    chain_push(ts, &next);
    return true;
  }

  /// Precondition: this thread holds the lock (held_by(ts)). Unlinks, then one CAS tid -> 0.
  void release(ThreadState& ts) noexcept {
    RobustListHead* h = ts.head;
    if (h->list_op_pending != &next) h->list_op_pending = &next;  // usually still set: INVARIANT6
    list_fence();
    (void)chain_remove(ts, &next);  // linked: the precondition
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
  /// unlock() by a thread that does not hold the lock. If this thread did lock it but the word no
  /// longer names it (another process overwrote the word), the entry is taken out of this thread's
  /// chain first (a lock whose memory may be freed must not stay in it) and the error says so.
  [[noreturn]] void throw_unlock_not_held(ThreadState& ts, const char* what);
  /// For lock()/try_lock(): owner_died -> abandon + throw owner_dead; not_recoverable -> throw.
  [[noreturn]] void throw_for(LockResult r, const char* what, ThreadState& ts);
};
static_assert(std::is_standard_layout_v<RobustCore>);
static_assert(offsetof(RobustCore, word) == 0, "the kernel finds the word at entry + futex_offset");
static_assert(offsetof(RobustCore, unused_prev) == 24 && offsetof(RobustCore, next) == 32,
              "glibc x86-64 robust mutex layout: __list at offset 24, futex_offset -32");
static_assert(static_cast<long>(offsetof(RobustCore, word)) - static_cast<long>(offsetof(RobustCore, next)) ==
              kFutexOffset);
static_assert(sizeof(RobustCore) == 40 && alignof(RobustCore) == 8);

/// A Condition's claim slot (INVARIANT9): a robust-list entry of the same geometry as a lock (word
/// at 0, entry = &next at 32), owned by one waiter for the duration of its wait().
struct ClaimSlot {
  std::atomic<std::uint32_t> word{0};  // 0 = free; tid | WAITERS = taken; OWNER_DIED | WAITERS = its waiter died
  std::uint32_t unused[7] = {};
  void* next = nullptr;                // the owner's chain link (INVARIANT7/8)
};
static_assert(std::is_standard_layout_v<ClaimSlot> && offsetof(ClaimSlot, next) == 32 && sizeof(ClaimSlot) == 40);
static_assert(static_cast<long>(offsetof(ClaimSlot, word)) - static_cast<long>(offsetof(ClaimSlot, next)) ==
              kFutexOffset);

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
    if (!core_.held_by(ts)) [[unlikely]] core_.throw_unlock_not_held(ts, "shmkit::Lock::unlock");
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
    if (!core_.held_by(ts)) [[unlikely]] core_.throw_unlock_not_held(ts, "shmkit::RLock::unlock");
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
/// wakes that waiter (or makes it not sleep at all). No wake-up dies with a waiter: if the thread
/// that notify_one() woke is killed before it holds the lock again, another waiter wakes instead.
///
/// INVARIANT4: seq changes (increments) on every notify; a waiter sleeps only while seq still holds
///             the value it read while holding the lock.
/// INVARIANT5: waiters >= the number of threads between "registered" and "left" in wait(); it can
///             exceed it forever when a waiter dies inside wait() (costing notify one futex_wake
///             system call each, nothing else).
///
/// WAKE-UPS OUTLIVE THEIR WAITER (claim slots). notify_one() cannot know which sleeper the kernel
/// wakes, and the woken thread can be killed before it runs another instruction, so the record of
/// its death must exist before it sleeps and must be acted on by the kernel. Each waiter therefore
/// claims one of kClaimSlots robust words for the whole of wait() — from before it releases the
/// lock until it holds the lock again — and links it into its robust chain like a held lock:
/// INVARIANT9: slot.word == t | WAITERS (t != 0) <=> thread t is inside wait() on this condition
///             and the slot's entry is in t's chain (or t's list_op_pending points at it); a slot
///             is free when its owner bits are 0. At t's death (asleep, woken, or blocked
///             re-acquiring the lock) the kernel finds the slot in t's list, sets it to
///             OWNER_DIED | WAITERS and wakes one thread sleeping on it.
/// INVARIANT10: every waiter sleeps (futex_waitv) on seq AND on every slot but its own, so that
///             kernel wake-up reaches another waiter; the waiter that turns a dead slot back to
///             free (CAS) returns from wait() as notified — the dead waiter's wake-up passed on.
///             A waiter that finds every slot taken waits unprotected (its death can lose a
///             wake-up, as before); kClaimSlots bounds the cost of the multi-word sleep.
/// The death of a waiter that was NOT the one woken also wakes another waiter: a spurious wake-up,
/// which every condition variable may give.
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

  /// The claim slot of this thread (INVARIANT9), or null when every slot is taken.
  locks_detail::ClaimSlot* claim_slot(locks_detail::ThreadState& ts) noexcept;
  void release_slot(locks_detail::ThreadState& ts, locks_detail::ClaimSlot* mine) noexcept;
  /// Sleeps until seq leaves `seq`, a dead waiter's slot is taken over (INVARIANT10), or deadline.
  sys::FutexResult sleep(std::uint32_t seq, const locks_detail::ClaimSlot* mine, sys::Deadline deadline) noexcept;

 public:
  static constexpr unsigned kClaimSlots = 8;

 private:
  std::atomic<std::uint32_t> seq_{0};      // futex word: INVARIANT4
  std::atomic<std::uint32_t> waiters_{0};  // INVARIANT5
  locks_detail::ClaimSlot slots_[kClaimSlots];  // INVARIANT9
};
static_assert(std::is_standard_layout_v<Condition> && alignof(Condition) == 8 &&
              sizeof(Condition) == 8 + Condition::kClaimSlots * sizeof(locks_detail::ClaimSlot));
static_assert(Condition::kClaimSlots + 1 <= sys::kFutexWaitAnyMax, "seq and every slot fit one futex_waitv");

}  // namespace shmkit
