// Timeouts: acquire(deadline), try_lock_for/try_lock_until (steady and system clock), try_acquire,
// Condition waits and Semaphore waits give up at their deadline — not much before, not much after —
// while another process holds the lock; and a deadline in the past still takes a free lock.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <mutex>

#include "lock_test_util.hpp"
#include "shmkit/locks/lock.hpp"
#include "shmkit/locks/semaphore.hpp"
#include "testing.hpp"

using namespace shmkit;
using namespace std::chrono_literals;
using shmkit::testing::Child;
using shmkit::testing::eventually;
using shmkit::testing::Shared;
using shmkit::testing::sleep_until_killed;
using Clock = std::chrono::steady_clock;

namespace {

struct Arena {
  Lock lock;
  RLock rlock;
  Condition cond;
  Semaphore sem;
  std::atomic<int> stage{0};
};

// Runs f and checks it took between `d` and `d` + a generous scheduling allowance.
template <class F>
void expect_takes(std::chrono::milliseconds d, F f) {
  const auto t0 = Clock::now();
  f();
  const auto took = Clock::now() - t0;
  EXPECT_GE(took, d - 1ms);
  EXPECT_LT(took, d + 500ms);
}

Child hold_both(Arena& a) {
  Child holder([&a]() -> int {
    if (a.lock.acquire() != LockResult::acquired) return 1;
    if (a.rlock.acquire() != LockResult::acquired) return 1;
    a.stage.store(1);
    sleep_until_killed();
  });
  EXPECT_TRUE(eventually([&] { return a.stage.load() == 1; }));
  return holder;
}

}  // namespace

TEST(LocksTimeout, AcquireWithDeadlineWhileAnotherProcessHolds) {
  Shared<Arena> a;
  Child holder = hold_both(*a);
  expect_takes(50ms, [&] { EXPECT_EQ(a->lock.acquire(Clock::now() + 50ms), LockResult::timed_out); });
  expect_takes(50ms, [&] { EXPECT_EQ(a->rlock.acquire(Clock::now() + 50ms), LockResult::timed_out); });
  EXPECT_EQ(a->lock.try_acquire(), LockResult::would_block);
  EXPECT_EQ(a->rlock.try_acquire(), LockResult::would_block);
  EXPECT_FALSE(a->lock.held_by_this_thread());
  // A timed-out acquire leaves no trace: the holder is unaffected and the word names it.
  EXPECT_EQ(a->lock.debug_word() & FUTEX_TID_MASK, static_cast<std::uint32_t>(holder.pid()));
}

TEST(LocksTimeout, LockableTimedCalls) {
  Shared<Arena> a;
  Child holder = hold_both(*a);
  expect_takes(40ms, [&] { EXPECT_FALSE(a->lock.try_lock_for(40ms)); });
  expect_takes(40ms, [&] { EXPECT_FALSE(a->lock.try_lock_until(Clock::now() + 40ms)); });
  expect_takes(40ms, [&] { EXPECT_FALSE(a->rlock.try_lock_until(std::chrono::system_clock::now() + 40ms)); });
  expect_takes(40ms, [&] {
    std::unique_lock<Lock> lk(a->lock, std::defer_lock);
    EXPECT_FALSE(lk.try_lock_for(40ms));
  });
  EXPECT_FALSE(a->lock.try_lock());
  EXPECT_FALSE(a->rlock.try_lock());
}

TEST(LocksTimeout, PastDeadlineStillTakesAFreeLock) {
  Shared<Arena> a;
  EXPECT_EQ(a->lock.acquire(Clock::now() - 1s), LockResult::acquired);
  a->lock.unlock();
  EXPECT_TRUE(a->lock.try_lock_for(0ms));
  a->lock.unlock();
  EXPECT_TRUE(a->rlock.try_lock_for(-5ms));
  a->rlock.unlock();
}

TEST(LocksTimeout, TimedOutWaiterDoesNotStealALaterWakeup) {
  // One process times out on the lock while another waits without deadline: the untimed one must
  // still be woken when the holder unlocks (the timed-out waiter's FUTEX_WAITERS flag stays).
  Shared<Arena> a;
  ASSERT_EQ(a->lock.acquire(), LockResult::acquired);
  Child timed([&] { return a->lock.acquire(Clock::now() + 30ms) == LockResult::timed_out ? 0 : 1; });
  Child untimed([&] {
    if (a->lock.acquire() != LockResult::acquired) return 1;
    a->lock.unlock();
    return 0;
  });
  EXPECT_EQ(timed.wait(5s), 0);
  std::this_thread::sleep_for(20ms);
  a->lock.unlock();
  EXPECT_EQ(untimed.wait(5s), 0);
}

TEST(LocksTimeout, ConditionTimedWaits) {
  Shared<Arena> a;
  ASSERT_EQ(a->lock.acquire(), LockResult::acquired);
  expect_takes(40ms, [&] { EXPECT_EQ(a->cond.wait(a->lock, Clock::now() + 40ms), WaitResult::timed_out); });
  EXPECT_TRUE(a->lock.held_by_this_thread()) << "the lock is held again after a timed-out wait";
  a->lock.unlock();
  std::unique_lock<Lock> lk(a->lock);
  expect_takes(40ms, [&] { EXPECT_EQ(a->cond.wait_for(lk, 40ms), std::cv_status::timeout); });
  expect_takes(40ms, [&] { EXPECT_FALSE(a->cond.wait_for(lk, 40ms, [] { return false; })); });
  EXPECT_TRUE(lk.owns_lock());
  lk.unlock();
  std::unique_lock<RLock> rlk(a->rlock);
  expect_takes(40ms, [&] {
    EXPECT_EQ(a->cond.wait_until(rlk, std::chrono::system_clock::now() + 40ms), std::cv_status::timeout);
  });
}

TEST(LocksTimeout, SemaphoreTimedWaits) {
  Shared<Arena> a;
  expect_takes(40ms, [&] { EXPECT_FALSE(a->sem.wait_for(40ms)); });
  expect_takes(40ms, [&] { EXPECT_FALSE(a->sem.wait_until(Clock::now() + 40ms)); });
  EXPECT_FALSE(a->sem.try_wait());
  a->sem.post();
  EXPECT_TRUE(a->sem.wait_for(0ms));
}
