/// When a waiter may spin before it sleeps, and for how long: Presence (what a party is doing
/// now, published in shared memory) and SpinPolicy (a process-local, bounded, adaptive budget).
///
/// The rule: spin only while the partner that will end the wait is running on another CPU right
/// now, and only for a bounded time; otherwise sleep at once. A spin on the partner's own CPU
/// burns the very time slice the partner needs to make progress; a spin while the partner sleeps
/// waits for nothing. The partner says which it is doing in its Presence word:
///   running   it is executing shmkit code or the caller's between two hand-offs, on `cpu`;
///   sleeping  it is in (or about to enter) a futex sleep;
///   waking    a waker woke it from that sleep, and it has not run yet (it will on `cpu`, the CPU
///             it last ran on, if the scheduler keeps it there: the usual case on an idle machine).
/// A spin is worth it for a partner that is running or waking on another CPU. Every Presence value
/// is a hint: a stale or forged one costs a bounded spin or a sleep, never a wake-up.
///
/// The budget (why it adapts, and what it may learn from). A futex hand-off costs a FUTEX_WAKE on
/// one side and a sleep plus a scheduler wake-up on the other, 5–10 µs on the reference machine
/// (2 vCPU); a spin sees a running partner's store in a few hundred ns. The budget is learnt
/// from spins only: a spin that succeeds after t sets it to at least 2t + margin; a spin that
/// runs out while the partner still looked spin-worthy halves it. The previous policy (channel's
/// AdaptiveSpin) also learnt every sleep shorter than its cap as "a longer spin would have caught
/// it"; under load those short sleeps are the partner waiting for a CPU, so the budget grew
/// exactly when spinning stole the CPU the partner needed. Here a sleep teaches nothing: the ping-
/// pong that this learning was meant to break (two sides that both sleep once stay in futex
/// hand-offs for good) is broken by Presence instead — a woken partner is `waking`, and a waiter
/// spins for it on an idle machine.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <type_traits>

#include "shmkit/sys/cpu.hpp"
#include "shmkit/sys/proc_control.hpp"

namespace shmkit {

/// What a party (one process, or one side of a queue) is doing now. 4 bytes in shared memory,
/// written by its owner (running/sleeping) and by a waker (sleeping -> waking); all-zero = unknown.
/// INVARIANT  word == state | (cpu + 1) << kCpuShift, cpu + 1 == 0 when unknown.
struct Presence {
  enum State : std::uint32_t { unknown = 0, running = 1, sleeping = 2, waking = 3 };
  static constexpr std::uint32_t kStateMask = 3;
  static constexpr std::uint32_t kCpuShift = 2;

  /// Every access is relaxed: the word steers spinning only and orders nothing; the hand-off's
  /// own words (EventCount, the data) carry every happens-before edge.
  std::atomic<std::uint32_t> word{0};

  static std::uint32_t encode(State s, int cpu) noexcept {
    return static_cast<std::uint32_t>(s) | (static_cast<std::uint32_t>(cpu + 1) << kCpuShift);
  }
  static State state_of(std::uint32_t w) noexcept { return static_cast<State>(w & kStateMask); }
  static int cpu_of(std::uint32_t w) noexcept { return static_cast<int>(w >> kCpuShift) - 1; }

  /// Publishes `s` on this CPU; stores only on a change, so a steady party keeps the line shared
  /// with the partner that reads it while spinning.
  void publish(State s) noexcept {
    std::uint32_t v = encode(s, sys::current_cpu());
    if (word.load(std::memory_order_relaxed) != v) word.store(v, std::memory_order_relaxed);
  }
  /// A waker that woke this party's sleep marks it `waking` (only if it still says sleeping: a
  /// party that already runs again keeps its own word).
  void mark_waking() noexcept {
    std::uint32_t v = word.load(std::memory_order_relaxed);
    if (state_of(v) == sleeping)
      (void)word.compare_exchange_strong(v, (v & ~kStateMask) | waking, std::memory_order_relaxed,
                                         std::memory_order_relaxed);
  }
  /// Is a spin by a waiter on `my_cpu` worth it for this partner? Running or waking on another
  /// CPU (an unknown CPU on either side counts as another: the budget still bounds the spin).
  bool worth_spinning_for(int my_cpu) const noexcept {
    std::uint32_t v = word.load(std::memory_order_relaxed);
    State s = state_of(v);
    if (s != running && s != waking) return false;
    int cpu = cpu_of(v);
    return cpu < 0 || my_cpu < 0 || cpu != my_cpu;
  }
};
static_assert(std::is_standard_layout_v<Presence> && sizeof(Presence) == 4 && alignof(Presence) == 4,
              "Presence lives in shared memory");
static_assert(std::atomic<std::uint32_t>::is_always_lock_free);

/// A waiter's spin budget (process-local; one per waiting role of a handle).
class SpinPolicy {
 public:
  /// The cap: 20 µs covers an idle machine's futex wake-up of the partner (5–10 µs measured) with
  /// margin, and bounds what a wrong hint can cost.
  static constexpr std::uint32_t kDefaultMaxNs = 20'000;
  static constexpr std::uint32_t kMinNs = 500;     // what a failed spin shrinks to at worst
  static constexpr std::uint32_t kMarginNs = 1'000;
  /// The partner's Presence is re-read every kRecheckEvery iterations while spinning.
  static constexpr std::uint32_t kRecheckEvery = 16;

  explicit SpinPolicy(std::uint32_t max_ns = kDefaultMaxNs) noexcept { set_max_ns(max_ns); }
  /// 0 = never spin.
  void set_max_ns(std::uint32_t max_ns) noexcept {
    max_ns_ = max_ns;
    budget_ns_ = max_ns < 4'000 ? max_ns : 4'000;
  }
  std::uint32_t max_ns() const noexcept { return max_ns_; }
  std::uint32_t budget_ns() const noexcept { return budget_ns_; }

  /// Spins while the partner is worth spinning for, until ready() (true) or the budget runs out
  /// (false). `poll_every`: ready() is evaluated every poll_every-th iteration only (a reader that
  /// polls the very line the partner is writing slows the partner down; see queue.cpp).
  template <class Ready>
  bool spin(Ready&& ready, const Presence& partner, std::uint32_t poll_every = 1) noexcept {
    if (max_ns_ == 0) return false;
    const int me = sys::current_cpu();
    if (!partner.worth_spinning_for(me)) return false;
    const std::uint32_t per = iteration_ns();
    const std::uint32_t limit = budget_ns_ / per + 1;
    for (std::uint32_t i = 1; i <= limit; ++i) {
      sys::cpu_relax();
      if (i % poll_every == 0 && ready()) {
        learn_success(i * per);
        return true;
      }
      // The partner went to sleep or onto our CPU: nothing more to gain here.
      if (i % kRecheckEvery == 0 && !partner.worth_spinning_for(me)) return ready();
    }
    if (ready()) return true;
    // Ran out while the partner still looked worth it: the partner is slower than the budget (or
    // preempted); halve so that a busy machine quickly stops paying for spins.
    budget_ns_ = budget_ns_ / 2 > kMinNs ? budget_ns_ / 2 : (kMinNs < max_ns_ ? kMinNs : max_ns_);
    return false;
  }

  /// Nanoseconds one spin iteration (PAUSE plus a load) takes here: measured once per process.
  static std::uint32_t iteration_ns() noexcept;

 private:
  void learn_success(std::uint32_t ns) noexcept {
    std::uint64_t want = 2ull * ns + kMarginNs;
    // Grow at once to cover what succeeded; decay slowly (1/16 per success) towards it.
    std::uint64_t b = budget_ns_ - budget_ns_ / 16;
    if (want > b) b = want;
    budget_ns_ = static_cast<std::uint32_t>(b < max_ns_ ? b : max_ns_);
    if (budget_ns_ < kMinNs && kMinNs <= max_ns_) budget_ns_ = kMinNs;
  }

  std::uint32_t max_ns_ = kDefaultMaxNs;
  std::uint32_t budget_ns_ = 4'000;
};

}  // namespace shmkit
