// Semaphore's slow paths: sleeping in wait and waking in post (see semaphore.hpp).
#include "shmkit/locks/semaphore.hpp"

#include <string>

#include "shmkit/sys/error.hpp"

namespace shmkit {

void Semaphore::post(std::uint32_t n) {
  if (n == 0) return;
  // A CAS loop rather than fetch_add + undo: a transient count above the limit could be consumed
  // by waiters before the undo and then wrap below zero.
  std::uint32_t v = value_.load(std::memory_order_relaxed);
  do {
    if (n > kMaxValue - v)
      throw Error(Errc::invalid_argument, "shmkit::Semaphore::post: the count " + std::to_string(v) +
                                              " + " + std::to_string(n) + " would exceed " +
                                              std::to_string(kMaxValue));
    // release: pairs with try_wait's acquire. The store-load order against a sleeper's
    // announcement comes from notify_all's fence (EventCount INVARIANT1).
  } while (!value_.compare_exchange_weak(v, v + n, std::memory_order_release, std::memory_order_relaxed));
  posted_.notify_all();
}

bool Semaphore::wait_slow(sys::Deadline deadline) noexcept {
  for (;;) {
    if (try_wait()) return true;
    // acquire: pairs with post's release (the unit is then taken by try_wait's CAS).
    auto available = [&] { return value_.load(std::memory_order_acquire) != 0; };
    if (sleep_until(posted_, available, deadline) == AwaitResult::timed_out) return try_wait();
  }
}

}  // namespace shmkit
