/// AdaptiveSpin: the bounded spin in front of every futex sleep of the channel and the queue.
///
/// Why bounded and adaptive. A futex hand-off costs a FUTEX_WAKE system call on one side and a
/// sleep plus a scheduler wake-up on the other, over ten times what a spin on a shared word takes
/// to see the partner's store — when the partner runs on the other core. On a 2-core machine it
/// often does not: if anything else is runnable a spinner burns the very core its partner needs,
/// so a long fixed spin costs its whole length per round trip under load, and a short fixed one
/// sends almost every round trip of an unloaded run to the futex (figures in
/// docs/PERFORMANCE_NOTES.md).
/// Policy: keep a moving average of how long waits take — waits that succeeded while spinning,
/// and waits that slept but were over within the maximum (a longer spin would have caught them:
/// typically the partner was itself asleep and needed a futex wake-up) — and spin for twice that
/// plus a margin, capped at the maximum. Waits longer than the maximum (an idle partner, or one
/// that is not getting a core) shrink the average by a quarter each, so on a busy machine the
/// spin collapses to the margin within a few waits; a spin that fails costs at most about twice
/// a typical wait, small next to the futex sleep it falls back to. Learning
/// from short sleeps matters: with successful spins alone, two sides that both fell asleep once
/// stay in a futex ping-pong for good (each side's wait is the other's wake-up latency, longer
/// than a spin budget tuned to fast replies), an order of magnitude slower per round trip.
#pragma once

#include <chrono>
#include <cstdint>

#include "shmkit/sys/proc_control.hpp"

namespace shmkit {

/// Nanoseconds one spin iteration (PAUSE plus a load) takes on this CPU, measured once per process
/// (PAUSE's cost differs by an order of magnitude between CPU generations).
inline std::uint32_t spin_iteration_ns() noexcept {
  static const std::uint32_t ns = [] {
    auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < 512; ++i) sys::cpu_relax();
    auto d = std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - t0);
    auto per = d.count() / 512;
    return static_cast<std::uint32_t>(per < 1 ? 1 : per > 1000 ? 1000 : per);
  }();
  return ns;
}

class AdaptiveSpin {
 public:
  /// Long enough to cover a futex wake-up on a loaded machine: a budget that cannot cover it
  /// cannot leave the futex regime (figures in docs/PERFORMANCE_NOTES.md).
  static constexpr std::uint32_t kDefaultMax = 2000;
  static constexpr std::uint32_t kMargin = 32;  // iterations on top of twice the average

  explicit AdaptiveSpin(std::uint32_t max = kDefaultMax) noexcept { set_max(max); }
  void set_max(std::uint32_t max) noexcept {
    max_ = max;
    avg16_ = 16u * 16u;  // start by assuming a wait of 16 iterations
  }
  /// Spin iterations the next wait will try.
  std::uint32_t budget() const noexcept {
    std::uint32_t b = 2 * (avg16_ / 16) + kMargin;
    return b < max_ ? b : max_;
  }

  /// Spins until ready() or the budget runs out; true when ready() held.
  template <class Ready>
  bool spin(Ready&& ready) noexcept {
    if (max_ == 0) return ready();
    const std::uint32_t limit = budget();
    for (std::uint32_t i = 0; i < limit; ++i) {
      if (ready()) {
        /// avg += (i - avg) / 8, kept in sixteenths for resolution.
        avg16_ = avg16_ - avg16_ / 8 + (i * 16) / 8;
        return true;
      }
      sys::cpu_relax();
    }
    return ready();
  }

  /// After a failed spin the caller slept; `slept` is how long until its wait was over. A wait that
  /// a spin of at most the maximum would have caught is learnt like a successful spin.
  void learn_slow_wait(std::chrono::nanoseconds slept) noexcept {
    if (max_ == 0 || slept.count() < 0) return;
    std::uint64_t it = budget() + static_cast<std::uint64_t>(slept.count()) / spin_iteration_ns();
    if (it < max_) {
      avg16_ = avg16_ - avg16_ / 8 + static_cast<std::uint32_t>(it) * 16 / 8;
    } else {
      /// Longer than any spin: the partner is idle or not getting a core. Spinning was wasted;
      /// shrink quickly so a busy machine is not made busier.
      avg16_ -= avg16_ / 4;
    }
  }

 private:
  std::uint32_t max_ = kDefaultMax;
  std::uint32_t avg16_ = 16u * 16u;  // moving average of successful spin lengths, x16
};

}  // namespace shmkit
