// The Lockable policy (std::lock_guard / unique_lock / scoped_lock): lock() never returns with an
// inconsistent lock. After an owner death it throws shmkit::Error{owner_dead} with the lock NOT
// held and still in the owner-died state, so that a later acquire() still reports owner_died and
// can repair. Condition's unique_lock overloads do the same and leave the unique_lock not owning.
// An RLock's recursive lock() inside an outer owner_died frame does not throw.
#include <gtest/gtest.h>

#include <atomic>
#include <mutex>

#include "lock_test_util.hpp"
#include "shmkit/locks/lock.hpp"
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
  Condition cond;
  std::atomic<int> stage{0};
  bool go = false;
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
  ASSERT_EQ(owner.wait(5s), -SIGKILL);
  a.stage.store(0);
}

}  // namespace

TEST(LocksLockable, LockGuardThrowsOwnerDeadAndLeavesTheLockForARepairer) {
  Shared<Arena> a;
  kill_holder(*a, a->lock);
  try {
    std::lock_guard<Lock> g(a->lock);
    FAIL() << "lock_guard must not be constructed over inconsistent data";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::owner_dead);
  }
  EXPECT_FALSE(a->lock.held_by_this_thread());
  EXPECT_EQ(a->lock.debug_word() & (FUTEX_OWNER_DIED | FUTEX_TID_MASK), static_cast<std::uint32_t>(FUTEX_OWNER_DIED));
  try {
    (void)a->lock.try_lock();
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::owner_dead);
  }
  // The repairer still learns it.
  ASSERT_EQ(a->lock.acquire(), LockResult::owner_died);
  a->lock.mark_consistent();
  a->lock.unlock();
  std::lock_guard<Lock> g(a->lock);  // fine now
}

TEST(LocksLockable, ScopedLockUnwindsCleanly) {
  Shared<Arena> a;
  kill_holder(*a, a->rlock);
  EXPECT_THROW((std::scoped_lock<Lock, RLock>(a->lock, a->rlock)), Error);
  EXPECT_FALSE(a->lock.held_by_this_thread()) << "scoped_lock released what it had taken";
  EXPECT_FALSE(a->rlock.held_by_this_thread());
  EXPECT_EQ(a->lock.debug_word(), 0u);
}

TEST(LocksLockable, RecursiveLockInsideARepairDoesNotThrow) {
  Shared<Arena> a;
  kill_holder(*a, a->rlock);
  ASSERT_EQ(a->rlock.acquire(), LockResult::owner_died);
  {
    std::lock_guard<RLock> inner(a->rlock);  // depth 2: the outer frame is repairing
    EXPECT_EQ(a->rlock.depth(), 2u);
  }
  a->rlock.mark_consistent();
  a->rlock.unlock();
  EXPECT_EQ(a->rlock.debug_word(), 0u);
}

TEST(LocksLockable, ConditionUniqueLockWaitOnOwnerDeath) {
  Shared<Arena> a;
  Child waiter([&] {
    std::unique_lock<Lock> lk(a->lock);
    a->stage.store(1);
    try {
      a->cond.wait(lk, [&] { return a->go; });
    } catch (const Error& e) {
      if (e.code() != Errc::owner_dead) return 2;
      if (lk.owns_lock() || a->lock.held_by_this_thread()) return 3;
      return 0;
    }
    return 1;
  });
  ASSERT_TRUE(eventually([&] { return a->stage.load() == 1; }));
  Child notifier([&]() -> int {
    while (a->lock.try_acquire() != LockResult::acquired) std::this_thread::yield();
    a->go = true;
    a->cond.notify_all();
    a->stage.store(2);
    sleep_until_killed();
  });
  ASSERT_TRUE(eventually([&] { return a->stage.load() == 2; }));
  ASSERT_TRUE(eventually([&] { return (a->lock.debug_word() & FUTEX_WAITERS) != 0; }));
  notifier.kill(SIGKILL);
  ASSERT_EQ(notifier.wait(5s), -SIGKILL);
  EXPECT_EQ(waiter.wait(5s), 0);
  EXPECT_EQ(a->lock.acquire(), LockResult::owner_died) << "the owner-died state was kept for a repairer";
  a->lock.mark_consistent();
  a->lock.unlock();
}
