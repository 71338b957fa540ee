// EventCount's system calls and SpinPolicy's calibration (see event_count.hpp, spin_policy.hpp).
#include "shmkit/locks/event_count.hpp"

#include <chrono>
#include <climits>

namespace shmkit {

sys::FutexResult EventCount::wait(Key key, sys::Deadline deadline) noexcept {
  // The kernel compares the word with the key under its futex lock: a notify whose RMW came
  // after prepare_wait makes this return value_changed at once (INVARIANT1).
  return sys::futex_wait(word_, key.word, deadline);
}

void EventCount::notify_slow(Presence* woken) noexcept {
  // One RMW: epoch + 1 and waiter_bit cleared ((v | 1) + 1), even when another notifier cleared
  // the bit between our load and here: our caller's store may be what a sleeper waits for, so
  // we wake whoever sleeps either way. seq_cst: part of the Dekker pair (INVARIANT1) and the
  // clear must not move after the wake below (INVARIANT2).
  std::uint32_t v = word_.load(std::memory_order_relaxed);
  while (!word_.compare_exchange_weak(v, (v | kWaiterBit) + 1, std::memory_order_seq_cst,
                                      std::memory_order_relaxed)) {
  }
  // Every sleeper: the bit is gone, so a sleeper left asleep here could miss the next notify
  // (INVARIANT2). Each one re-checks its condition and announces itself again if it still waits.
  if (sys::futex_wake(word_, INT_MAX) > 0 && woken != nullptr) woken->mark_waking();
}

std::uint32_t SpinPolicy::iteration_ns() noexcept {
  static const std::uint32_t ns = [] {
    auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < 2048; ++i) sys::cpu_relax();
    auto d = std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - t0);
    auto per = d.count() / 2048;
    return static_cast<std::uint32_t>(per < 1 ? 1 : per > 1000 ? 1000 : per);
  }();
  return ns;
}

}  // namespace shmkit
