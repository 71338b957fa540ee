/// shmkit::Semaphore: a counting semaphore in shared memory, for processes that hand each other
/// units (slots, permits).
///
/// post() adds to the count and wakes sleepers; wait() takes one unit, sleeping while the count is
/// 0. Uncontended post is one RMW plus EventCount::notify_all's fence and load; wait is one RMW;
/// neither makes a system call when nobody sleeps. Sleeping goes through EventCount (the one wait
/// protocol, event_count.hpp), so a waiter or poster killed at any instruction leaves nothing
/// stuck: a dead sleeper costs the next post one FUTEX_WAKE, a poster killed between its add and
/// its wake delays a sleeper by at most kRecheckSlice.
/// A semaphore has no owner, so there is no owner-death handling: a process that dies after wait()
/// and before the matching post() takes its unit with it (the data structure using the semaphore
/// must account for that, e.g. by reclaiming slots of dead processes).
/// All-zero bytes == a semaphore with count 0.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <type_traits>

#include "shmkit/locks/event_count.hpp"
#include "shmkit/locks/lock.hpp"
#include "shmkit/sys/futex_word.hpp"

namespace shmkit {

class Semaphore {
 public:
  static constexpr std::uint32_t kMaxValue = 0x7fffffffu;

  constexpr Semaphore() noexcept = default;
  constexpr explicit Semaphore(std::uint32_t initial) noexcept : value_(initial) {}
  Semaphore(const Semaphore&) = delete;
  Semaphore& operator=(const Semaphore&) = delete;

  /// Adds n units and wakes the sleepers. Throws Error{Errc::invalid_argument} (and adds
  /// nothing) if the count would exceed kMaxValue.
  void post(std::uint32_t n = 1);

  /// Takes one unit if the count is not 0; never sleeps.
  [[nodiscard]] bool try_wait() noexcept {
    std::uint32_t v = value_.load(std::memory_order_relaxed);
    while (v != 0) {
      /// acquire: pairs with post()'s release, so what the poster wrote before posting is visible.
      if (value_.compare_exchange_weak(v, v - 1, std::memory_order_acquire, std::memory_order_relaxed))
        return true;
    }
    return false;
  }
  /// Takes one unit, sleeping while the count is 0.
  void wait() noexcept { (void)wait_until(sys::kNoDeadline); }
  /// Takes one unit, sleeping until `deadline` at most; false when it passed with the count at 0.
  [[nodiscard]] bool wait_until(sys::Deadline deadline) noexcept {
    if (try_wait()) [[likely]] return true;
    return wait_slow(deadline);
  }
  template <class Rep, class Period>
  [[nodiscard]] bool wait_for(const std::chrono::duration<Rep, Period>& d) noexcept {
    return wait_until(locks_detail::deadline_after(d));
  }
  template <class C, class D>
  [[nodiscard]] bool wait_until(const std::chrono::time_point<C, D>& tp) noexcept {
    return wait_until(locks_detail::deadline_at(tp));
  }

  /// The count now (a snapshot; for diagnostics and tests).
  std::uint32_t value() const noexcept { return value_.load(std::memory_order_relaxed); }

 private:
  bool wait_slow(sys::Deadline deadline) noexcept;

  std::atomic<std::uint32_t> value_{0};  // the count. INVARIANT1: value_ <= kMaxValue
  EventCount posted_;                    // notified by every post that may end a wait
};
static_assert(std::is_standard_layout_v<Semaphore> && sizeof(Semaphore) == 8);

}  // namespace shmkit
