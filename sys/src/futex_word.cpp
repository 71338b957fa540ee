#include "shmkit/sys/futex_word.hpp"

#include "shmkit/sys/debug_assert.hpp"

#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>

namespace shmkit::sys {

timespec to_timespec(Deadline deadline) noexcept {
  auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(deadline.time_since_epoch()).count();
  if (ns < 0) ns = 0;
  timespec ts;
  ts.tv_sec = static_cast<time_t>(ns / 1000000000);
  ts.tv_nsec = static_cast<long>(ns % 1000000000);
  return ts;
}

long futex_raw(std::atomic<std::uint32_t>& word, int op, std::uint32_t val, const timespec* timeout,
               std::uint32_t* uaddr2, std::uint32_t val3) noexcept {
  // Every word is process-shared (the header's rule): a private futex op on one would key the
  // waiters by this process's address only, and a waiter in another process would never wake.
  SHMKIT_ASSERT_INTERNAL((op & FUTEX_PRIVATE_FLAG) == 0);
  long r = ::syscall(SYS_futex, futex_address(word), op, val, timeout, uaddr2, val3);
  return r >= 0 ? r : -errno;
}

FutexResult futex_wait(std::atomic<std::uint32_t>& word, std::uint32_t expected,
                       Deadline deadline) noexcept {
  long r;
  if (deadline == kNoDeadline) {
    r = futex_raw(word, FUTEX_WAIT, expected, nullptr, nullptr, 0);
  } else {
    // FUTEX_WAIT_BITSET takes an absolute CLOCK_MONOTONIC deadline, so a retried wait after
    // EINTR does not stretch the timeout.
    timespec ts = to_timespec(deadline);
    r = futex_raw(word, FUTEX_WAIT_BITSET, expected, &ts, nullptr, FUTEX_BITSET_MATCH_ANY);
  }
  if (r == 0) return FutexResult::woken;
  switch (-r) {
    case EAGAIN: return FutexResult::value_changed;
    case ETIMEDOUT: return FutexResult::timed_out;
    case EINTR: return FutexResult::interrupted;
    default:
      std::fprintf(stderr, "shmkit: futex_wait failed with errno %ld\n", -r);
      std::abort();
  }
}

FutexWaitAnyResult futex_wait_any(const FutexWaitItem* items, unsigned n, Deadline deadline) noexcept {
  if (n == 0 || n > kFutexWaitAnyMax) {
    std::fprintf(stderr, "shmkit: futex_wait_any with %u words (1..%u)\n", n, kFutexWaitAnyMax);
    std::abort();
  }
  struct futex_waitv waiters[kFutexWaitAnyMax] = {};
  for (unsigned i = 0; i < n; ++i) {
    waiters[i].val = items[i].expected;
    waiters[i].uaddr = reinterpret_cast<std::uintptr_t>(futex_address(*items[i].word));
    waiters[i].flags = FUTEX_32;  // shared (no FUTEX_PRIVATE_FLAG): the words are in MAP_SHARED memory
  }
  timespec ts = to_timespec(deadline);  // futex_waitv takes an absolute time on the given clock
  long r = ::syscall(SYS_futex_waitv, waiters, n, 0, deadline == kNoDeadline ? nullptr : &ts, CLOCK_MONOTONIC);
  if (r >= 0) return {FutexResult::woken, static_cast<int>(r)};
  switch (errno) {
    case EAGAIN: return {FutexResult::value_changed, -1};
    case ETIMEDOUT: return {FutexResult::timed_out, -1};
    case EINTR: return {FutexResult::interrupted, -1};
    default:
      std::fprintf(stderr, "shmkit: futex_waitv failed with errno %d\n", errno);
      std::abort();
  }
}

int futex_wake(std::atomic<std::uint32_t>& word, int count) noexcept {
  SHMKIT_ASSERT_INTERNAL(count > 0);  // a wake of nobody is a caller's bug, not a no-op to hide
  long r = futex_raw(word, FUTEX_WAKE, static_cast<std::uint32_t>(count), nullptr, nullptr, 0);
  if (r < 0) {
    std::fprintf(stderr, "shmkit: futex_wake failed with errno %ld\n", -r);
    std::abort();
  }
  return static_cast<int>(r);
}

}  // namespace shmkit::sys
