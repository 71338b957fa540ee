// The slow paths of Lock, RLock and Condition: contention, sleeping, owner death, misuse.
// The fast paths and the layout (and why the design is what it is) are in lock.hpp.
#include "shmkit/locks/lock.hpp"

#include <pthread.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "shmkit/sys/debug_assert.hpp"
#include "shmkit/sys/log.hpp"
#include "shmkit/sys/syscall.hpp"
#include "shmkit/sys/thread.hpp"

namespace shmkit {

std::string_view to_string(LockResult r) noexcept {
  switch (r) {
    case LockResult::acquired: return "acquired";
    case LockResult::owner_died: return "owner_died";
    case LockResult::not_recoverable: return "not_recoverable";
    case LockResult::timed_out: return "timed_out";
    case LockResult::would_block: return "would_block";
  }
  return "unknown";
}

std::string_view to_string(WaitResult r) noexcept {
  switch (r) {
    case WaitResult::notified: return "notified";
    case WaitResult::timed_out: return "timed_out";
    case WaitResult::owner_died: return "owner_died";
    case WaitResult::not_recoverable: return "not_recoverable";
  }
  return "unknown";
}

namespace locks_detail {
namespace {

[[noreturn]] void fatal(const char* msg) noexcept {
  std::fprintf(stderr, "shmkit locks: %s\n", msg);
  std::abort();
}

// In a fork child the one thread has a new tid, and glibc has reset its robust list to empty at
// the same head address — but not list_op_pending, which glibc assumes is null at fork (true for
// its own operations). Ours may still point at a lock the PARENT holds (INVARIANT6); in the child
// that lock is not ours, and the parent may free and reuse its memory, so clear it. Then forget
// the cache so the next lock operation re-reads tid and head.
// The chain (INVARIANT7) is dropped with it: glibc's list no longer holds our anchor, and the
// parent's locks are not the child's.
void reset_thread_state_in_child() noexcept {
  ThreadState& ts = tls_thread_state;
  if (ts.head != nullptr) ts.head->list_op_pending = nullptr;
  ts.tid = 0;
  ts.linked = 0;
  ts.head = nullptr;
  ts.end = nullptr;
}

std::atomic<std::uint64_t> overwritten_links{0};

// How a contended acquire spins before it sleeps: it re-reads the word up to kSpinRounds times,
// pausing 1, 2, 4, ... up to kMaxPauses pause instructions between reads (exponential backoff).
// A critical section between processes is usually far shorter than a futex sleep + wake-up (a few
// microseconds, and a system call in the owner's unlock), so spinning turns most hand-offs into a
// cache-line transfer; backing off keeps the spinner from pulling the line away from the owner on
// every pause, so an owner in a loop runs at nearly uncontended speed. Bounded: 1791 pauses, about
// 45 us on this machine's EPYC (25 ns per pause), before sleeping.
// Measured with bench/lock_contended_2proc.cpp under `chrt -f 10` (both processes really running
// at once on the 2 cores), ns per increment, shmkit vs boost_mutex in the same run:
//   100 rounds x 1 pause: 37 vs 39;  12 x 16: 15 vs 33;  24 x 32: 10.5 vs 35;  32 x 64: 8.5 vs 32;
//   48 x 64: 6.9 vs 20.
#ifndef SHMKIT_LOCK_SPIN_ROUNDS
#define SHMKIT_LOCK_SPIN_ROUNDS 32
#endif
#ifndef SHMKIT_LOCK_MAX_PAUSES
#define SHMKIT_LOCK_MAX_PAUSES 64
#endif
constexpr int kSpinRounds = SHMKIT_LOCK_SPIN_ROUNDS;
constexpr int kMaxPauses = SHMKIT_LOCK_MAX_PAUSES;

}  // namespace

namespace {

// Links this thread's private anchor into glibc's list (THE CHAIN in lock.hpp). Nothing of ours is
// behind it yet, and its word is 0, so the kernel acts on none of it: no list_op_pending needed.
void link_anchor(ThreadState& ts) noexcept {
  RobustListHead* h = ts.head;
  ts.linked = 0;
  ts.anchor = PrivateAnchor{};
  ts.tail = PrivateAnchor{};
  void* const first = h->list;
  if (first == h) {
    // The usual case: glibc's list is empty, so the anchor is and stays its last entry (glibc only
    // adds at the front), and our chain can end in a self-loop instead of a private address.
    ts.end = nullptr;
    ts.anchor.prev = h;  // glibc's convention for the first entry
    ts.anchor.next = h;
  } else {
    // The thread holds glibc robust mutexes right now: they must stay reachable behind our chain,
    // through a second private anchor. glibc's ENQUEUE: the old first entry's prev = our entry.
    ts.end = &ts.tail.next;
    ts.tail.next = first;
    ts.tail.prev = &ts.anchor.next;
    *reinterpret_cast<void**>((reinterpret_cast<std::uintptr_t>(first) & ~std::uintptr_t{1}) - sizeof(void*)) =
        &ts.tail.next;
    ts.anchor.prev = h;
    ts.anchor.next = &ts.tail.next;
  }
  list_fence();
  h->list = &ts.anchor.next;  // this store makes the anchor reachable for the kernel
}

}  // namespace

[[noreturn]] void chain_full() noexcept {
  fatal("this thread holds too many shmkit locks at once (the per-thread robust chain holds 256 "
        "entries; the kernel walks at most 2048 per thread)");
}

void report_overwritten_link(void** e, void* expected) noexcept {
  // relaxed: a statistic; nothing is published through it.
  overwritten_links.fetch_add(1, std::memory_order_relaxed);
  void* const found = *static_cast<void* volatile*>(e);
  try {
    shmkit::log().warn(
        "shmkit locks: the robust-list link of the lock at {} (held by thread {}) holds {} instead of {}: "
        "another process wrote into this lock while this thread held it. The link was ignored (this "
        "thread follows only its private record); had the thread died meanwhile, the kernel's "
        "cleanup could have missed locks it held",
        static_cast<void*>(reinterpret_cast<char*>(e) + kFutexOffset), tls_thread_state.tid, found, expected);
  } catch (...) {
    // Logging failed (out of memory): the count above still records it.
  }
}

bool chain_remove_inner(ThreadState& ts, void** e) noexcept {
  const std::uint32_t n = ts.linked;
  std::uint32_t i = 0;
  while (i < n && ts.chain[i] != e) ++i;
  if (i == n) return false;
  if (i == n - 1) return chain_remove(ts, e);  // the newest after all (not reached from chain_remove)
  // chain[i+1] is the newer neighbour: a node this thread holds (so still mapped), whose `next` is
  // the one store that takes e out of the walk.
  void* const successor = i > 0 ? static_cast<void*>(ts.chain[i - 1]) : chain_end_for(ts, e);
  if (*e != successor) report_overwritten_link(e, successor);
  void** const newer = ts.chain[i + 1];
  *newer = i > 0 ? static_cast<void*>(ts.chain[i - 1]) : chain_end_for(ts, newer);
  for (std::uint32_t j = i; j + 1 < n; ++j) ts.chain[j] = ts.chain[j + 1];
  ts.linked = n - 1;
  return true;
}

ThreadState& init_thread_state() noexcept {
  // Registered once per process, on the first lock operation of any thread; atfork handlers are
  // inherited by fork children, so every generation of children resets its cache.
  static const bool atfork_registered = [] {
    if (::pthread_atfork(nullptr, nullptr, &reset_thread_state_in_child) != 0)
      fatal("pthread_atfork failed: cannot keep the cached thread id right across fork()");
    return true;
  }();
  (void)atfork_registered;

  ThreadState& ts = tls_thread_state;
  void* head = nullptr;
  std::size_t len = 0;
  const long r = sys::get_robust_list(0, &head, &len);
  if (r < 0 || head == nullptr || len != sizeof(RobustListHead))
    fatal("get_robust_list gave no usable robust-futex list head for this thread (is this a "
          "glibc thread on Linux?); locks cannot be robust to owner death without it");
  auto* h = static_cast<RobustListHead*>(head);
  if (h->futex_offset != kFutexOffset)
    fatal("this thread's robust list has a futex_offset other than glibc x86-64's -32; "
          "shmkit::Lock's layout (word at 0, node at 24) would not be found by the kernel");
  ts.head = h;
  link_anchor(ts);
  ts.tid = static_cast<std::uint32_t>(sys::gettid());
  if (ts.tid == 0 || (ts.tid & ~kTidMask) != 0) fatal("gettid returned an id that does not fit the lock word");
  return ts;
}

LockResult RobustCore::acquire_slow(ThreadState& ts, sys::Deadline deadline, bool try_only) noexcept {
  RobustListHead* h = ts.head;
  // The cached thread state is this thread's: a fork child forgets the parent's
  // (reset_thread_state_in_child), so the tid that goes into the word is the caller's own.
  SHMKIT_ASSERT_INTERNAL(h != nullptr && ts.tid == static_cast<std::uint32_t>(sys::gettid()));
  // Keep list_op_pending on this lock for the whole slow path, sleeping included: if this thread
  // dies after an unlock woke it but before it took the lock, the kernel sees a pending op on a
  // word with no owner and wakes the next waiter (handle_futex_death's pending_op case), so the
  // wake-up is passed on instead of lost.
  h->list_op_pending = &next;
  list_fence();
  auto done = [h](LockResult r) noexcept {
    list_fence();
    h->list_op_pending = nullptr;
    return r;
  };
  std::uint32_t w = word.load(std::memory_order_relaxed);
  int spins = try_only ? 0 : kSpinRounds;
  int pauses = 1;
  // Once this thread has slept it takes the lock with WAITERS set: it cannot know whether others
  // still sleep (the flag may have been cleared since it was woken), so its own unlock must wake
  // the next one (as in Drepper's "mutex3" and glibc's robust mutex).
  std::uint32_t waiters_if_slept = 0;
  bool probed_owner = false;
  for (;;) {
    if (w == kNotRecoverable) return done(LockResult::not_recoverable);
    const std::uint32_t owner = w & kTidMask;
    if (owner == 0) {
      // Free. Take it keeping OWNER_DIED (INVARIANT3: still inconsistent) and WAITERS (the kernel
      // leaves OWNER_DIED|WAITERS when sleepers remain after an owner's death: INVARIANT2).
      const std::uint32_t desired = ts.tid | (w & (kOwnerDied | kWaiters)) | waiters_if_slept;
      // acquire: pairs with the releasing store of the previous owner (or the kernel's cmpxchg
      // when the owner died; the dead thread's stores precede its exit).
      if (word.compare_exchange_weak(w, desired, std::memory_order_acquire,
                                     std::memory_order_relaxed)) {
        chain_push(ts, &next);
        return done((w & kOwnerDied) != 0 ? LockResult::owner_died : LockResult::acquired);
      }
      continue;  // w was reloaded by the failed CAS
    }
    if (owner == ts.tid) {
      if (!chain_holds(ts, &next)) {
        // The word names this thread but this thread never locked it: a forged word, or one left
        // by an earlier wearer of our thread id that the kernel never cleaned up (a segment that
        // outlived its kernel). Nobody holds it: take it over as from a dead owner.
        if (word.compare_exchange_weak(w, ts.tid | kOwnerDied | (w & kWaiters), std::memory_order_acquire,
                                       std::memory_order_relaxed)) {
          chain_push(ts, &next);
          return done(LockResult::owner_died);
        }
        continue;
      }
      if (try_only) return done(LockResult::would_block);
      fatal("Lock::acquire: this thread already holds this lock, so it would wait forever "
            "(Lock is not recursive; use shmkit::RLock)");
    }
    if (try_only) return done(LockResult::would_block);
    if (spins > 0) {
      --spins;
      for (int i = 0; i < pauses; ++i) cpu_relax();
      pauses = pauses < kMaxPauses ? 2 * pauses : kMaxPauses;
      w = word.load(std::memory_order_relaxed);
      continue;
    }
    if (!probed_owner) {
      // Once, before the first sleep: does the owner exist at all? The kernel clears the tid of
      // every owner that dies (robust list), so a word naming a thread that does not exist was
      // never cleaned up — forged, or from a segment that outlived its kernel — and would block
      // forever. "Exists" proves nothing (ids are reused), only "does not exist" is acted on.
      // Costs one kill(tid, 0) after the spin phase (~45 us), never on the fast path. Assumes all
      // users of the lock share one pid namespace (as shmkit's process identities do).
      probed_owner = true;
      if (sys::thread_exists(static_cast<pid_t>(owner)) == 0) {
        if (word.compare_exchange_strong(w, ts.tid | kOwnerDied | (w & kWaiters) | waiters_if_slept,
                                         std::memory_order_acquire, std::memory_order_relaxed)) {
          chain_push(ts, &next);
          return done(LockResult::owner_died);
        }
        continue;
      }
    }
    if ((w & kWaiters) == 0) {
      // relaxed: setting the flag publishes nothing; it only obliges the owner's unlock to wake.
      if (!word.compare_exchange_weak(w, w | kWaiters, std::memory_order_relaxed,
                                      std::memory_order_relaxed))
        continue;
      w |= kWaiters;
    }
    // Sleeps only if the word still equals w (owner + WAITERS): an unlock or the kernel's
    // owner-died update in between makes this return at once.
    waiters_if_slept = kWaiters;
    if (sys::futex_wait(word, w, deadline) == sys::FutexResult::timed_out) {
      w = word.load(std::memory_order_relaxed);
      if ((w & kTidMask) != 0 && w != kNotRecoverable) return done(LockResult::timed_out);
      continue;  // freed (or made unrecoverable) just as the deadline passed: report that instead
    }
    w = word.load(std::memory_order_relaxed);
  }
}

void RobustCore::release_slow(std::uint32_t w) noexcept {
  if ((w & kOwnerDied) != 0) {
    // Released without mark_consistent(): the data stays torn for good. Every waiter must learn
    // it, so wake them all. release: nothing to publish really, but keeps the last critical
    // section ordered before anyone observing kNotRecoverable.
    word.exchange(kNotRecoverable, std::memory_order_release);
    sys::futex_wake_all(word);
    return;
  }
  // WAITERS was set. Release with the flag KEPT (owner 0, WAITERS) and wake one sleeper. Keeping
  // it matters when the woken thread is killed before it takes the lock: a third thread that takes
  // the lock meanwhile cannot use the one-CAS fast path (the word is not 0), takes it with WAITERS
  // and so wakes the next sleeper on its unlock; if nobody takes it, the kernel wakes the next
  // sleeper itself (the dead thread's list_op_pending names a word with no owner). With a plain
  // release to 0 (glibc's way) the remaining sleepers would sleep on until some later contention.
  // release: publishes the critical section to the next acquirer.
  word.exchange(kWaiters, std::memory_order_release);
  if (sys::futex_wake(word, 1) == 0) {
    // Nobody was asleep at that instant: drop the flag if the word is still exactly kWaiters, so
    // the next lock/unlock is back on the one-CAS fast path. A thread that went to sleep after our
    // wake saw an owner; for the word to be kWaiters again that owner released and woke one
    // sleeper, and every woken thread takes the lock with WAITERS set (waiters_if_slept), so
    // clearing cannot strand a sleeper. (It could only if, in addition, that woken thread were
    // killed before taking the lock and a fourth thread took the now-0 word first.)
    std::uint32_t expected = kWaiters;
    // relaxed: clearing the flag publishes nothing.
    word.compare_exchange_strong(expected, 0, std::memory_order_relaxed, std::memory_order_relaxed);
  }
}

void RobustCore::abandon_inconsistent(ThreadState& ts) noexcept {
  RobustListHead* h = ts.head;
  h->list_op_pending = &next;
  list_fence();
  (void)chain_remove(ts, &next);  // linked: it was just acquired
  list_fence();
  depth = 0;
  // Back to what the kernel leaves when an owner dies: no owner, OWNER_DIED, and WAITERS so the
  // next unlock of whoever takes it wakes any sleeper. release: our writes happen before the next
  // acquirer's repair.
  word.exchange(kOwnerDied | kWaiters, std::memory_order_release);
  sys::futex_wake(word, 1);
  list_fence();
  h->list_op_pending = nullptr;
}

void RobustCore::mark_consistent(ThreadState& ts) noexcept {
  const std::uint32_t w = word.load(std::memory_order_relaxed);
  if ((w & kOwnerDied) == 0 || !held_by(ts)) return;
  // An RMW because waiters may set WAITERS concurrently. relaxed: the repair is published by the
  // release of the following unlock, and only the owner reads OWNER_DIED while it holds the lock.
  word.fetch_and(~kOwnerDied, std::memory_order_relaxed);
}

void RobustCore::throw_not_owner(const char* what) const {
  const std::uint32_t w = word.load(std::memory_order_relaxed);
  std::string state;
  if (w == kNotRecoverable)
    state = "the lock is not recoverable";
  else if ((w & kTidMask) == 0)
    state = "the lock is not held by anyone";
  else
    state = "the lock is held by thread " + std::to_string(w & kTidMask);
  throw Error(Errc::invalid_argument,
              std::string(what) + ": the calling thread " + std::to_string(thread_state().tid) +
                  " does not hold this lock (" + state + ")");
}

void RobustCore::throw_unlock_not_held(ThreadState& ts, const char* what) {
  if (!chain_holds(ts, &next)) throw_not_owner(what);
  // We linked it, so we acquired it, and we did not release it: the word was rewritten under us.
  RobustListHead* h = ts.head;
  h->list_op_pending = &next;
  list_fence();
  (void)chain_remove(ts, &next);
  list_fence();
  h->list_op_pending = nullptr;
  depth = 0;
  char word_hex[16];
  std::snprintf(word_hex, sizeof word_hex, "0x%08x", word.load(std::memory_order_relaxed));
  throw Error(Errc::corrupt,
              std::string(what) + ": thread " + std::to_string(ts.tid) +
                  " acquired this lock and has not released it, but its word now reads " + word_hex +
                  ": another process overwrote it. The lock was taken out of this thread's robust "
                  "list and left as it is; the data it protects may be damaged as well");
}

void RobustCore::throw_for(LockResult r, const char* what, ThreadState& ts) {
  if (r == LockResult::owner_died) {
    abandon_inconsistent(ts);
    throw Error(Errc::owner_dead,
                std::string(what) +
                    ": the previous owner died while holding the lock, so the data it protects "
                    "may be inconsistent. The lock was left in the owner-died state and is not "
                    "held; call acquire(), which returns LockResult::owner_died, repair the data, "
                    "then mark_consistent() and unlock()");
  }
  if (r == LockResult::not_recoverable)
    throw Error(Errc::not_recoverable,
                std::string(what) +
                    ": the lock is not recoverable: a previous owner died and the next owner "
                    "unlocked it without mark_consistent(). Re-create the lock (and the data it "
                    "protects) when no process uses it");
  throw Error(Errc::invalid_argument, std::string(what) + ": unexpected lock result " +
                                          std::string(to_string(r)));
}

}  // namespace locks_detail

std::uint64_t robust_link_overwrites() noexcept {
  return locks_detail::overwritten_links.load(std::memory_order_relaxed);  // relaxed: a statistic
}

LockResult RLock::acquire_contended(locks_detail::ThreadState& ts, sys::Deadline deadline,
                                    bool try_only) noexcept {
  // acquire_fast() failed and left list_op_pending on this lock; a recursive acquire does not
  // touch the list, so clear it here.
  const std::uint32_t w = core_.word.load(std::memory_order_relaxed);
  if ((w & locks_detail::kTidMask) == ts.tid && locks_detail::chain_holds(ts, &core_.next)) {
    locks_detail::list_fence();
    ts.head->list_op_pending = nullptr;
    if (core_.depth == UINT32_MAX) {
      std::fprintf(stderr, "shmkit locks: RLock recursion depth overflow\n");
      std::abort();
    }
    ++core_.depth;
    return (w & locks_detail::kOwnerDied) != 0 ? LockResult::owner_died : LockResult::acquired;
  }
  const LockResult r = core_.acquire_slow(ts, deadline, try_only);
  if (r == LockResult::acquired || r == LockResult::owner_died) core_.depth = 1;
  return r;
}

locks_detail::ClaimSlot* Condition::claim_slot(locks_detail::ThreadState& ts) noexcept {
  using namespace locks_detail;
  RobustListHead* h = ts.head;
  for (ClaimSlot& slot : slots_) {
    // Only a free slot (0): a dead waiter's slot (OWNER_DIED) still carries a wake-up that a
    // sleeper is about to take over (INVARIANT10); claiming it would swallow that wake-up.
    std::uint32_t expected = 0;
    if (slot.word.load(std::memory_order_relaxed) != expected) continue;
    h->list_op_pending = &slot.next;  // dying between the CAS and the link must still be seen
    list_fence();
    // relaxed: a slot publishes no data; only its value matters, to the kernel and to futex_waitv.
    if (slot.word.compare_exchange_strong(expected, ts.tid | kWaiters, std::memory_order_relaxed,
                                          std::memory_order_relaxed)) {
      chain_push(ts, &slot.next);
      list_fence();
      h->list_op_pending = nullptr;
      return &slot;
    }
  }
  list_fence();
  h->list_op_pending = nullptr;
  return nullptr;
}

void Condition::release_slot(locks_detail::ThreadState& ts, locks_detail::ClaimSlot* mine) noexcept {
  using namespace locks_detail;
  RobustListHead* h = ts.head;
  h->list_op_pending = &mine->next;  // dying between the unlink and the store must still free it
  list_fence();
  (void)chain_remove(ts, &mine->next);
  list_fence();
  // relaxed: as in claim_slot. Nobody else changes a slot that names a live waiter (INVARIANT9).
  mine->word.store(0, std::memory_order_relaxed);
  list_fence();
  h->list_op_pending = nullptr;
}

sys::FutexResult Condition::sleep(std::uint32_t seq, const locks_detail::ClaimSlot* mine,
                                  sys::Deadline deadline) noexcept {
  using namespace locks_detail;
  sys::FutexWaitItem items[1 + kClaimSlots];
  for (;;) {
    unsigned n = 0;
    items[n++] = {&seq_, seq};
    for (ClaimSlot& slot : slots_) {
      if (&slot == mine) continue;
      // relaxed: the kernel compares the values again when it queues us; a stale one only makes
      // futex_waitv fail with EAGAIN and this loop read again.
      std::uint32_t w = slot.word.load(std::memory_order_relaxed);
      if ((w & kTidMask) == 0 && (w & kOwnerDied) != 0) {
        // A waiter died inside wait() (the kernel marked its slot). Whoever frees the slot takes
        // over its wake-up (INVARIANT10): this wait returns as notified.
        if (slot.word.compare_exchange_strong(w, 0, std::memory_order_relaxed, std::memory_order_relaxed))
          return sys::FutexResult::woken;
      }
      items[n++] = {&slot.word, w};
    }
    // After the slots, so that a waiter the kernel woke for a dead slot frees that slot even when
    // a notify came too. relaxed: only decides whether to sleep (again); the lost-wake-up argument
    // is the seq_cst pair at registration (see notify_one), and futex_waitv compares seq itself.
    if (seq_.load(std::memory_order_relaxed) != seq) return sys::FutexResult::woken;
    const sys::FutexWaitAnyResult r = sys::futex_wait_any(items, n, deadline);
    if (r.result == sys::FutexResult::timed_out) return r.result;
    // Woken, EAGAIN or EINTR: a notify (seq moved), a slot that changed (a waiter came, left or
    // died), or a signal: the next round looks.
  }
}

WaitResult Condition::wait_core(locks_detail::RobustCore& core, sys::Deadline deadline,
                                const char* what) {
  locks_detail::ThreadState& ts = locks_detail::thread_state();
  if (!core.held_by(ts)) core.throw_not_owner(what);
  // Claimed before the lock is released and kept until it is held again: the whole stretch in
  // which this thread's death could swallow a notify_one (INVARIANT9).
  locks_detail::ClaimSlot* const mine = claim_slot(ts);
  // Register, then read seq, both while holding the lock (seq_cst, see notify_one for the pairing).
  waiters_.fetch_add(1, std::memory_order_seq_cst);
  const std::uint32_t seq = seq_.load(std::memory_order_seq_cst);
  const std::uint32_t saved_depth = core.depth;  // RLock: released fully, restored after
  core.release(ts);
  const sys::FutexResult fr = sleep(seq, mine, deadline);
  // relaxed: the count only decides whether notify makes a system call; a late decrement costs
  // one needless futex_wake.
  waiters_.fetch_sub(1, std::memory_order_relaxed);
  const LockResult lr =
      core.acquire_fast(ts) ? LockResult::acquired : core.acquire_slow(ts, sys::kNoDeadline, false);
  if (mine != nullptr) release_slot(ts, mine);
  if (lr == LockResult::not_recoverable) return WaitResult::not_recoverable;
  core.depth = saved_depth;
  if (lr == LockResult::owner_died) return WaitResult::owner_died;
  return fr == sys::FutexResult::timed_out ? WaitResult::timed_out : WaitResult::notified;
}

// Lost wake-up freedom (Dekker): the waiter does RMW(waiters_) then load(seq_) and the kernel's
// re-check of seq_ in FUTEX_WAIT; the notifier does RMW(seq_) then load(waiters_). All seq_cst, so
// either the notifier sees the waiter registered (and wakes it), or the waiter's read of seq_ comes
// after the increment (and it does not sleep). A waiter that changed the predicate's data under the
// lock before notify is ordered by the lock itself.
void Condition::notify_one() noexcept {
  seq_.fetch_add(1, std::memory_order_seq_cst);
  if (waiters_.load(std::memory_order_seq_cst) != 0) sys::futex_wake(seq_, 1);
}

void Condition::notify_all() noexcept {
  seq_.fetch_add(1, std::memory_order_seq_cst);
  if (waiters_.load(std::memory_order_seq_cst) != 0) sys::futex_wake_all(seq_);
}

}  // namespace shmkit
