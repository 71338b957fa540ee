// Misuse gets an error, not silent corruption: unlocking a lock nobody holds, unlocking a lock held
// by another process or another thread, unlocking an RLock owned by another thread, locking a
// (non-recursive) Lock twice from one thread, unlocking an RLock more times than it was locked,
// and a Semaphore count overflow. The lock is unaffected by the failed call.
#include <gtest/gtest.h>

#include <atomic>
#include <thread>

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

namespace {

struct Arena {
  Lock lock;
  RLock rlock;
  Semaphore sem;
  std::atomic<int> stage{0};
};

template <class F>
void expect_invalid(F f) {
  try {
    f();
    ADD_FAILURE() << "expected shmkit::Error{invalid_argument}";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::invalid_argument) << e.what();
  }
}

}  // namespace

TEST(LocksMisuse, UnlockingAnUnheldLock) {
  Shared<Arena> a;
  expect_invalid([&] { a->lock.unlock(); });
  expect_invalid([&] { a->rlock.unlock(); });
  EXPECT_EQ(a->lock.debug_word(), 0u);
  EXPECT_EQ(a->lock.acquire(), LockResult::acquired);  // still works
  a->lock.unlock();
}

TEST(LocksMisuse, UnlockingALockHeldByAnotherProcess) {
  Shared<Arena> a;
  Child holder([&]() -> int {
    if (a->lock.acquire() != LockResult::acquired || a->rlock.acquire() != LockResult::acquired) return 1;
    a->stage.store(1);
    sleep_until_killed();
  });
  ASSERT_TRUE(eventually([&] { return a->stage.load() == 1; }));
  const std::uint32_t before = a->lock.debug_word();
  expect_invalid([&] { a->lock.unlock(); });
  expect_invalid([&] { a->rlock.unlock(); });
  EXPECT_EQ(a->lock.debug_word(), before) << "a failed unlock must not change the lock";
  EXPECT_EQ(a->lock.try_acquire(), LockResult::would_block);
}

TEST(LocksMisuse, UnlockingAnRLockOwnedByAnotherThread) {
  Shared<Arena> a;
  ASSERT_EQ(a->rlock.acquire(), LockResult::acquired);
  ASSERT_EQ(a->lock.acquire(), LockResult::acquired);
  std::thread other([&] {
    expect_invalid([&] { a->rlock.unlock(); });
    expect_invalid([&] { a->lock.unlock(); });
    EXPECT_FALSE(a->rlock.held_by_this_thread());
  });
  other.join();
  EXPECT_EQ(a->rlock.depth(), 1u);
  a->rlock.unlock();
  a->lock.unlock();
}

TEST(LocksMisuse, LockingANonRecursiveLockTwice) {
  Shared<Arena> a;
  a->lock.lock();
  expect_invalid([&] { a->lock.lock(); });
  EXPECT_FALSE(a->lock.try_lock());
  EXPECT_EQ(a->lock.try_acquire(), LockResult::would_block);
  EXPECT_TRUE(a->lock.held_by_this_thread());
  a->lock.unlock();
  EXPECT_EQ(a->lock.debug_word(), 0u);
}

TEST(LocksMisuse, AcquireTwiceAbortsInsteadOfDeadlocking) {
  Shared<Arena> a;
  Child c([&] {
    (void)a->lock.acquire();
    (void)a->lock.acquire();  // aborts with a message
    return 0;
  });
  EXPECT_EQ(c.wait(5s), -SIGABRT);
}

TEST(LocksMisuse, UnlockingAnRLockOnceTooOften) {
  Shared<Arena> a;
  ASSERT_EQ(a->rlock.acquire(), LockResult::acquired);
  ASSERT_EQ(a->rlock.acquire(), LockResult::acquired);
  a->rlock.unlock();
  a->rlock.unlock();
  expect_invalid([&] { a->rlock.unlock(); });
}

TEST(LocksMisuse, SemaphoreOverflow) {
  Shared<Arena> a;
  a->sem.post(Semaphore::kMaxValue);
  expect_invalid([&] { a->sem.post(); });
  EXPECT_EQ(a->sem.value(), Semaphore::kMaxValue);
}
