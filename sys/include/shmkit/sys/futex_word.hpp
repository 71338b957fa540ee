/// The one place where an std::atomic<uint32_t> is handed to the kernel as a futex word
/// (tcmalloc's rule: quarantine the dangerous cast). Every futex call in shmkit goes through here.
///
/// All operations are process-shared: FUTEX_PRIVATE_FLAG is never used, because the words live in
/// MAP_SHARED segments that other processes map (at the same or at a relocated address; the kernel
/// keys shared futexes by inode+offset, so both work).
#pragma once

#include <linux/futex.h>
#include <time.h>

#include <atomic>
#include <chrono>
#include <cstdint>

namespace shmkit::sys {

static_assert(sizeof(std::atomic<std::uint32_t>) == sizeof(std::uint32_t),
              "a futex word must be exactly the 32-bit integer the kernel reads");
static_assert(alignof(std::atomic<std::uint32_t>) == alignof(std::uint32_t));
static_assert(std::atomic<std::uint32_t>::is_always_lock_free);

/// The kernel reads and compares-and-writes the same 4 bytes that std::atomic stores in; the
/// static_asserts above are the layout facts this relies on.
inline std::uint32_t* futex_address(std::atomic<std::uint32_t>& word) noexcept {
  return reinterpret_cast<std::uint32_t*>(&word);
}

enum class FutexResult {
  woken,          // FUTEX_WAIT returned 0: woken (or spuriously) — re-check the word
  value_changed,  // EAGAIN: the word did not hold `expected` when the kernel looked
  timed_out,      // ETIMEDOUT: the deadline passed
  interrupted,    // EINTR: a signal handler ran; re-check and wait again
};

/// An absolute deadline on CLOCK_MONOTONIC. time_point::max() means "no deadline".
using Clock = std::chrono::steady_clock;  // steady_clock is CLOCK_MONOTONIC on Linux
using Deadline = Clock::time_point;
inline constexpr Deadline kNoDeadline = Deadline::max();

/// Sleeps while `word` == expected, until woken or `deadline`. Other errors from the kernel
/// (EFAULT, EINVAL, ENOSYS) are programming errors here and abort with a message.
FutexResult futex_wait(std::atomic<std::uint32_t>& word, std::uint32_t expected,
                       Deadline deadline = kNoDeadline) noexcept;

/// Wakes up to `count` waiters; returns how many were woken.
int futex_wake(std::atomic<std::uint32_t>& word, int count) noexcept;
inline int futex_wake_all(std::atomic<std::uint32_t>& word) noexcept {
  return futex_wake(word, INT32_MAX);
}

/// One word of futex_wait_any(): sleep while *word == expected.
struct FutexWaitItem {
  std::atomic<std::uint32_t>* word;
  std::uint32_t expected;
};
inline constexpr unsigned kFutexWaitAnyMax = 128;  // FUTEX_WAITV_MAX

/// futex_waitv(2) (Linux 5.16): sleeps while every items[i].word == items[i].expected, until one of
/// the words is woken (FUTEX_WAKE on it, from user space or from the kernel's robust-list cleanup)
/// or `deadline` passes. woken carries the index of the word that was woken; value_changed means
/// some word did not hold its expected value. n must be 1..kFutexWaitAnyMax; other kernel errors
/// abort with a message, as in futex_wait.
struct FutexWaitAnyResult {
  FutexResult result;
  int index;  // the woken word (result == woken), else -1
};
FutexWaitAnyResult futex_wait_any(const FutexWaitItem* items, unsigned n, Deadline deadline = kNoDeadline) noexcept;

/// Raw futex(2) for the lock module's special operations (for example FUTEX_WAKE_OP, or a
/// priority-inheritance op); returns the kernel's result or -errno. FUTEX_PRIVATE_FLAG must not be
/// in `op`.
long futex_raw(std::atomic<std::uint32_t>& word, int op, std::uint32_t val,
               const struct timespec* timeout, std::uint32_t* uaddr2, std::uint32_t val3) noexcept;

/// Converts a deadline to the absolute CLOCK_MONOTONIC timespec that FUTEX_WAIT_BITSET takes.
timespec to_timespec(Deadline deadline) noexcept;

}  // namespace shmkit::sys

namespace shmkit {
/// The clock and deadline types every blocking call of the public API takes (Queue::push,
/// Channel calls, WorkerPool::wait, Lock::acquire): users name them as shmkit::Deadline.
using sys::Clock;
using sys::Deadline;
using sys::kNoDeadline;
}  // namespace shmkit
