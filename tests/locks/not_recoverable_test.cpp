// The not-recoverable path: after an owner dies, an acquirer that unlocks without
// mark_consistent() makes the lock permanently unusable; that wakes every blocked waiter, and every
// later acquire / try_acquire / timed acquire (and the Lockable calls, and Condition::wait's
// re-acquire) reports not_recoverable without holding the lock. Also: mark_consistent() restores
// normal operation.
#include <gtest/gtest.h>

#include <atomic>
#include <vector>

#include "lock_test_util.hpp"
#include "shmkit/locks/lock.hpp"
#include "testing.hpp"

using namespace shmkit;
using shmkit::testing::Child;
using shmkit::testing::eventually;
using shmkit::testing::Shared;
using shmkit::testing::sleep_until_killed;

namespace {

struct Arena {
  Lock lock;
  RLock rlock;
  Condition cond;
  std::atomic<int> stage{0};
  std::atomic<int> results[3] = {-1, -1, -1};
};

template <class L>
void kill_holder(Arena& a, L& l) {
  Child owner([&]() -> int {
    if (l.acquire() != LockResult::acquired) return 1;
    a.stage.store(1);
    sleep_until_killed();
  });
  ASSERT_TRUE(eventually([&] { return a.stage.load() == 1; }));
  owner.kill(SIGKILL);
  ASSERT_EQ(owner.wait(std::chrono::seconds(5)), -SIGKILL);
}

}  // namespace

TEST(LocksNotRecoverable, UnlockWithoutRepairWakesAllWaitersWithNotRecoverable) {
  Shared<Arena> a;
  kill_holder(*a, a->lock);
  ASSERT_EQ(a->lock.acquire(), LockResult::owner_died);
  // Three processes block on the lock while we "fail to repair" it.
  std::vector<Child> waiters;
  for (int i = 0; i < 3; ++i)
    waiters.emplace_back([&a, i] {
      a->results[i].store(static_cast<int>(a->lock.acquire()));
      return 0;
    });
  ASSERT_TRUE(eventually([&] { return (a->lock.debug_word() & FUTEX_WAITERS) != 0; }));
  std::this_thread::sleep_for(std::chrono::milliseconds(30));
  a->lock.unlock();  // no mark_consistent()
  for (int i = 0; i < 3; ++i) {
    ASSERT_EQ(waiters[static_cast<std::size_t>(i)].wait(std::chrono::seconds(5)), 0)
        << "a waiter was not woken when the lock became not recoverable";
    EXPECT_EQ(a->results[i].load(), static_cast<int>(LockResult::not_recoverable));
  }
  EXPECT_EQ(a->lock.acquire(), LockResult::not_recoverable);
  EXPECT_EQ(a->lock.try_acquire(), LockResult::not_recoverable);
  EXPECT_EQ(a->lock.acquire(std::chrono::steady_clock::now() + std::chrono::milliseconds(10)),
            LockResult::not_recoverable);
  EXPECT_FALSE(a->lock.held_by_this_thread());
  try {
    a->lock.lock();
    FAIL() << "lock() on a not-recoverable lock must throw";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::not_recoverable);
  }
  EXPECT_THROW((void)a->lock.try_lock(), Error);
  EXPECT_THROW(a->lock.unlock(), Error);  // nobody holds it
}

TEST(LocksNotRecoverable, RLockHeldRecursivelyUnlockedWithoutRepair) {
  Shared<Arena> a;
  kill_holder(*a, a->rlock);
  ASSERT_EQ(a->rlock.acquire(), LockResult::owner_died);
  ASSERT_EQ(a->rlock.acquire(), LockResult::owner_died) << "still inconsistent at depth 2";
  a->rlock.unlock();
  EXPECT_TRUE(a->rlock.held_by_this_thread()) << "depth 1 remains";
  a->rlock.unlock();
  EXPECT_EQ(a->rlock.acquire(), LockResult::not_recoverable);
  Child other([&] { return a->rlock.try_acquire() == LockResult::not_recoverable ? 0 : 1; });
  EXPECT_EQ(other.wait(std::chrono::seconds(5)), 0);
}

TEST(LocksNotRecoverable, WaitingOnConditionWithInconsistentLockMakesItNotRecoverable) {
  Shared<Arena> a;
  kill_holder(*a, a->lock);
  ASSERT_EQ(a->lock.acquire(), LockResult::owner_died);
  // Waiting releases the lock unrepaired (as pthread_cond_wait does): it cannot be re-acquired.
  EXPECT_EQ(a->cond.wait(a->lock, std::chrono::steady_clock::now() + std::chrono::milliseconds(10)),
            WaitResult::not_recoverable);
  EXPECT_FALSE(a->lock.held_by_this_thread());
  EXPECT_EQ(a->lock.acquire(), LockResult::not_recoverable);
}

TEST(LocksNotRecoverable, MarkConsistentRestoresNormalOperation) {
  Shared<Arena> a;
  kill_holder(*a, a->lock);
  ASSERT_EQ(a->lock.acquire(), LockResult::owner_died);
  a->lock.mark_consistent();
  a->lock.mark_consistent();  // idempotent
  a->lock.unlock();
  EXPECT_EQ(a->lock.debug_word(), 0u);
  Child other([&] {
    if (a->lock.acquire() != LockResult::acquired) return 1;
    a->lock.unlock();
    return 0;
  });
  EXPECT_EQ(other.wait(std::chrono::seconds(5)), 0);
}
