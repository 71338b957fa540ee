// AdaptiveSpin: the bounded spin in front of every futex sleep of the channel and the queue.
//
// Why bounded and adaptive. A futex hand-off costs a FUTEX_WAKE system call on one side and a
// sleep plus a scheduler wake-up on the other: measured on this project's machine (2 vCPU AMD
// EPYC, Linux 6.18) about 4–5 µs each way, while a spin on a shared word sees the partner's store
// in well under a microsecond — when the partner runs on the other core. On a 2-core machine the
// partner often does not: if anything else is runnable, a spinner burns the very core its partner
// needs, and one PAUSE here costs about 50 ns, so a fixed 20,000-iteration spin was measured
// at 1 ms per round trip under load. So the budget adapts per handle: a wait that succeeds while
// spinning after i iterations sets the budget to about 2i (plus slack, capped at the maximum); a
// spin that runs out halves it (down to a floor). With the partner on its own core the budget
// settles just above the typical reply time; with the partner descheduled it collapses to the
// floor within a few waits and the caller sleeps almost at once.
#pragma once

#include <cstdint>

#include "shmkit/sys/proc_control.hpp"

namespace shmkit::transport {

class AdaptiveSpin {
 public:
  // ~50 ns per iteration (one PAUSE plus a load) on the reference machine: 400 = ~20 µs, about
  // four futex hand-offs, beyond which spinning cannot pay for itself.
  static constexpr std::uint32_t kDefaultMax = 400;
  static constexpr std::uint32_t kFloor = 8;

  explicit AdaptiveSpin(std::uint32_t max = kDefaultMax) noexcept { set_max(max); }
  void set_max(std::uint32_t max) noexcept {
    max_ = max;
    budget_ = max;
  }
  std::uint32_t budget() const noexcept { return budget_; }

  // Spins until ready() or the budget runs out; true when ready() held.
  template <class Ready>
  bool spin(Ready&& ready) noexcept {
    if (max_ == 0) return ready();
    // Every kProbeEvery-th wait spins the full maximum once, so a budget that collapsed while the
    // machine was busy can find out that spinning pays again.
    const std::uint32_t limit = ++waits_ % kProbeEvery == 0 ? max_ : budget_;
    for (std::uint32_t i = 0; i < limit; ++i) {
      if (ready()) {
        std::uint32_t want = 2 * i + kFloor;
        // Shrink slowly towards 2i, grow at once (never past the maximum).
        std::uint32_t next = want > budget_ ? want : budget_ - (budget_ - want) / 8;
        budget_ = next < max_ ? next : max_;
        return true;
      }
      sys::cpu_relax();
    }
    budget_ = budget_ / 2 > kFloor ? budget_ / 2 : (kFloor < max_ ? kFloor : max_);
    return ready();
  }

 private:
  static constexpr std::uint32_t kProbeEvery = 64;
  std::uint32_t max_ = kDefaultMax;
  std::uint32_t budget_ = kDefaultMax;
  std::uint32_t waits_ = 0;
};

}  // namespace shmkit::transport
