// Semaphore's slow paths: sleeping in wait and waking in post (see semaphore.hpp).
#include "shmkit/locks/semaphore.hpp"

#include <string>

#include "shmkit/sys/error.hpp"

namespace shmkit {

// Lost wake-up freedom (Dekker, like Condition): a sleeper does RMW(waiters_) and then the kernel
// re-reads value_ in FUTEX_WAIT; post does RMW(value_) then load(waiters_). All seq_cst: either post
// sees the sleeper registered and wakes it, or the sleeper's FUTEX_WAIT finds value_ != 0 and
// returns at once.
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
    // seq_cst (includes release: pairs with try_wait's acquire; seq_cst for the Dekker pairing).
  } while (!value_.compare_exchange_weak(v, v + n, std::memory_order_seq_cst, std::memory_order_relaxed));
  if (waiters_.load(std::memory_order_seq_cst) != 0)
    sys::futex_wake(value_, static_cast<int>(n));  // n <= kMaxValue == INT32_MAX
}

bool Semaphore::wait_slow(sys::Deadline deadline) noexcept {
  waiters_.fetch_add(1, std::memory_order_seq_cst);
  bool taken = false;
  for (;;) {
    if (try_wait()) {
      taken = true;
      break;
    }
    if (sys::futex_wait(value_, 0, deadline) == sys::FutexResult::timed_out) {
      taken = try_wait();  // a post that raced the deadline is not lost
      break;
    }
  }
  // relaxed: only decides whether post makes a system call.
  waiters_.fetch_sub(1, std::memory_order_relaxed);
  return taken;
}

}  // namespace shmkit
