/// shmkit::EventCount: THE way one process waits for another's store — every hand-off between
/// processes (Queue, Channel, WorkerPool, Semaphore) waits through it, so the arm / fence /
/// re-check / futex-wait protocol is written here once.
///
/// A 32-bit futex word in shared memory (folly's EventCount and Baton are the model):
///   word == epoch << 1 | waiter_bit
/// waiter_bit = 1 means "a waiter may be asleep (or about to be): a notifier must make the system
/// call"; epoch counts the notifies that found it set.
///
/// Lifecycle (a waiter W for a condition C that a notifier N makes true):
///   W: if (C) done;                      // fast path, no write
///      key = ec.prepare_wait();          // sets waiter_bit (seq_cst RMW)
///      if (C) { ec.cancel_wait(); done; } // re-check after announcing
///      ec.wait(key, deadline);           // sleeps unless a notify changed the word since
///      ... loop to the re-check          // (woken, value_changed, interrupted, timed_out)
///   N: make C true (any store, any order: the fence in notify_all orders it);
///      ec.notify_all();                  // a fence and a load when nobody waits
/// await_until() below is this loop with the spin policy in front; use it rather than the steps.
///
/// INVARIANT1 (no lost wake-up)  If W's re-check misses N's store, N's load in notify_all sees
///   waiter_bit: W's RMW + fence + re-check and N's store + fence + load are a Dekker pair with a
///   seq_cst fence on each side — one of the two loads sees the other side's write. A notify that sees the bit
///   bumps the epoch (clearing the bit) before it wakes, so a W between prepare_wait and
///   FUTEX_WAIT finds the word != key and returns at once, and a W already in the kernel is woken.
/// INVARIANT2 (the bit is never cleared under a sleeper)  Only a notify clears waiter_bit, in the
///   same RMW that bumps the epoch, and it then wakes every sleeper: every key handed out before
///   the RMW is stale, so no waiter sleeps afterwards on a word whose bit is clear unless it set
///   the bit itself (a later prepare_wait).
///
/// Death of a party at any instruction (SIGKILL):
///   * a waiter dies after prepare_wait (in or out of the kernel): the bit stays set; the next
///     notify pays one FUTEX_WAKE that wakes nobody and clears it. Nothing else is left behind:
///     there is no count of waiters to leak.
///   * a notifier dies after making C true and before its wake: no primitive can wake W for it.
///     await_until() therefore sleeps in slices of kRecheckSlice and re-checks C after each, so
///     W sees C within one slice; a notifier dying between the epoch bump and FUTEX_WAKE is the
///     same case.
///
/// Cost: notify_all() with nobody waiting is one seq_cst fence and one load of a line that stays
/// shared (no RMW, no system call); prepare_wait is one RMW, on the slow path only.
/// All-zero bytes are a valid EventCount (standard layout, 4 bytes, lives in shared memory; the
/// futex calls are process-shared).
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <type_traits>

#include "shmkit/locks/spin_policy.hpp"
#include "shmkit/sys/futex_word.hpp"

namespace shmkit {

class EventCount {
 public:
  static constexpr std::uint32_t kWaiterBit = 1;

  /// What prepare_wait() saw; wait() sleeps only while the word still holds it.
  struct Key {
    std::uint32_t word;
  };

  constexpr EventCount() noexcept = default;
  EventCount(const EventCount&) = delete;
  EventCount& operator=(const EventCount&) = delete;

  /// Announces a waiter (INVARIANT1). The RMW is seq_cst and a seq_cst fence follows it: the fence
  /// pairs with notify_all's fence (store-buffering is forbidden between two seq_cst fences), so
  /// the caller's re-check may use plain acquire loads. After a locked RMW the fence costs
  /// nothing on x86 (the store buffer is already drained).
  [[nodiscard]] Key prepare_wait() noexcept {
    const std::uint32_t seen = word_.fetch_or(kWaiterBit, std::memory_order_seq_cst) | kWaiterBit;
    std::atomic_thread_fence(std::memory_order_seq_cst);
    return Key{seen};
  }
  /// Nothing to undo: a waiter_bit left set costs the next notify one FUTEX_WAKE (see above).
  void cancel_wait() noexcept {}
  /// Sleeps until a notify after prepare_wait(), the deadline, a signal or a spurious wake-up.
  /// The caller re-checks its condition whatever the result.
  sys::FutexResult wait(Key key, sys::Deadline deadline = sys::kNoDeadline) noexcept;

  /// Wakes every waiter that announced itself before the caller's prior stores became visible
  /// (INVARIANT1). `woken`: the Presence of the waiting side, marked waking when a sleeper was
  /// woken (so the partner's next wait spins for it: spin_policy.hpp).
  void notify_all(Presence* woken = nullptr) noexcept {
    notify_all_if([] { return true; }, woken);
  }
  /// notify_all() when worth() holds: for a notifier whose waiters wait for more than "something
  /// changed" (a producer waiting for half the ring free). worth() runs only when a waiter is
  /// announced, so its loads cost nothing when nobody sleeps. Correct when every waiter's
  /// condition implies worth() once the caller's store is seen.
  template <class Worth>
  void notify_all_if(Worth&& worth, Presence* woken = nullptr) noexcept {
    // Pairs with the fence in prepare_wait (INVARIANT1): orders the caller's stores (the
    // condition) before the load of the word below.
    std::atomic_thread_fence(std::memory_order_seq_cst);
    // relaxed: the fence above gives the ordering; a set bit sends us to the RMW in notify_slow.
    if ((word_.load(std::memory_order_relaxed) & kWaiterBit) != 0 && worth()) [[unlikely]]
      notify_slow(woken);
  }

  /// The raw word (diagnostics and tests).
  std::uint32_t value() const noexcept { return word_.load(std::memory_order_relaxed); }

 private:
  void notify_slow(Presence* woken) noexcept;

  std::atomic<std::uint32_t> word_{0};  // the futex word: epoch << 1 | waiter_bit
};
static_assert(std::is_standard_layout_v<EventCount> && sizeof(EventCount) == 4 && alignof(EventCount) == 4,
              "EventCount lives in shared memory: exactly its futex word");

/// How long await_until sleeps at most before re-checking the condition: the bound on the delay a
/// notifier killed between its store and its wake can cause (see EventCount).
inline constexpr auto kRecheckSlice = std::chrono::milliseconds(50);

enum class AwaitResult : std::uint8_t { ready, timed_out };

/// Sleeps on `ec` until ready() or `deadline`, in slices of kRecheckSlice, without spinning: the
/// EventCount lifecycle written once. `self` (optional) is published sleeping / running.
/// ready() must read the shared state with acquire (or stronger) loads; it is called after
/// prepare_wait, which orders it (INVARIANT1).
template <class Ready>
AwaitResult sleep_until(EventCount& ec, Ready&& ready, sys::Deadline deadline, Presence* self = nullptr) noexcept {
  for (;;) {
    if (ready()) return AwaitResult::ready;
    const auto now = sys::Clock::now();
    if (now >= deadline) return AwaitResult::timed_out;
    if (self != nullptr) self->publish(Presence::sleeping);
    const EventCount::Key key = ec.prepare_wait();
    if (!ready()) (void)ec.wait(key, std::min(deadline, now + kRecheckSlice));
    else ec.cancel_wait();
    if (self != nullptr) self->publish(Presence::running);
  }
}

/// Waits until ready() or `deadline`: spins (SpinPolicy: only while `partner` runs on another
/// CPU, bounded), then sleep_until(). `self` is this waiter's Presence (published running /
/// sleeping); `partner` is the Presence of whoever will notify `ec`. poll_every: see
/// SpinPolicy::spin.
template <class Ready>
AwaitResult await_until(EventCount& ec, Ready&& ready, sys::Deadline deadline, SpinPolicy& policy,
                        Presence& self, const Presence& partner, std::uint32_t poll_every = 1) noexcept {
  if (ready()) return AwaitResult::ready;
  self.publish(Presence::running);
  if (policy.spin(ready, partner, poll_every)) return AwaitResult::ready;
  return sleep_until(ec, ready, deadline, &self);
}

}  // namespace shmkit
