// fork(): a child forked while another thread of the parent (or the forking thread itself) holds a
// lock does not hold it: the child's try_acquire says would_block, its unlock() throws, its
// acquire() waits until the parent's owner releases and then succeeds; if the parent's owner is
// killed instead, the child gets owner_died. The child's cached thread id and robust list are its
// own (glibc resets the list in the child): locks it takes are released by the kernel when it dies.
#include <gtest/gtest.h>

#include <atomic>
#include <thread>

#include "lock_test_util.hpp"
#include "shmkit/locks/lock.hpp"
#include "shmkit/sys/syscall.hpp"
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
  std::atomic<int> stage{0};
  std::atomic<int> child_result{-1};
  std::atomic<int> child_tid{0};
};

}  // namespace

TEST(LocksFork, ChildForkedWhileAnotherParentThreadHoldsTheLock) {
  Shared<Arena> a;
  std::atomic<bool> release{false};
  std::thread holder([&] {
    ASSERT_EQ(a->lock.acquire(), LockResult::acquired);
    ASSERT_EQ(a->rlock.acquire(), LockResult::acquired);
    a->stage.store(1);
    while (!release.load()) std::this_thread::sleep_for(1ms);
    a->rlock.unlock();
    a->lock.unlock();
  });
  ASSERT_TRUE(eventually([&] { return a->stage.load() == 1; }));
  Child child([&] {
    if (a->lock.held_by_this_thread() || a->rlock.held_by_this_thread()) return 1;
    if (a->lock.try_acquire() != LockResult::would_block) return 2;
    if (a->rlock.try_acquire() != LockResult::would_block) return 3;
    try {
      a->lock.unlock();
      return 4;
    } catch (const Error&) {
    }
    try {
      a->rlock.unlock();
      return 5;
    } catch (const Error&) {
    }
    a->stage.store(2);
    // Blocks until the parent's thread releases, then holds the lock as itself.
    if (a->lock.acquire(Clock::now() + 10s) != LockResult::acquired) return 6;
    if (a->rlock.acquire(Clock::now() + 10s) != LockResult::acquired) return 7;
    a->child_tid.store(static_cast<int>(a->lock.debug_word() & FUTEX_TID_MASK));
    if (!a->lock.held_by_this_thread() || !a->rlock.held_by_this_thread()) return 8;
    a->rlock.unlock();
    a->lock.unlock();
    return 0;
  });
  const pid_t child_pid = child.pid();
  ASSERT_TRUE(eventually([&] { return a->stage.load() == 2; }));
  std::this_thread::sleep_for(20ms);
  release.store(true);
  holder.join();
  EXPECT_EQ(child.wait(10s), 0);
  EXPECT_EQ(a->child_tid.load(), child_pid) << "the child locked as itself, with its own tid";
  EXPECT_EQ(a->lock.debug_word(), 0u);
}

TEST(LocksFork, ChildOfTheHoldingThreadDoesNotHoldTheLock) {
  Shared<Arena> a;
  ASSERT_EQ(a->lock.acquire(), LockResult::acquired);  // warms this thread's cached tid
  ASSERT_NE(locks_detail::thread_state().head->list_op_pending, nullptr) << "INVARIANT6 fast path";
  Child child([&] {
    // The cached tid must be the child's: otherwise it would think it owns the parent's lock.
    if (a->lock.held_by_this_thread()) return 1;
    // The parent's fast path left list_op_pending on the lock it holds; the child must not inherit
    // that (the kernel would look at that word when the child dies or execs).
    if (locks_detail::thread_state().head->list_op_pending != nullptr) return 4;
    if (a->lock.try_acquire() != LockResult::would_block) return 2;
    a->stage.store(1);
    if (a->lock.acquire(Clock::now() + 10s) != LockResult::acquired) return 3;
    a->child_tid.store(static_cast<int>(a->lock.debug_word() & FUTEX_TID_MASK));
    a->lock.unlock();
    return 0;
  });
  const pid_t child_pid = child.pid();
  ASSERT_TRUE(eventually([&] { return a->stage.load() == 1; }));
  EXPECT_TRUE(a->lock.held_by_this_thread());
  a->lock.unlock();
  ASSERT_EQ(child.wait(10s), 0);
  EXPECT_EQ(a->child_tid.load(), child_pid) << "the child's cached tid was refreshed after fork";
}

TEST(LocksFork, ParentOwnerKilledWhileForkedChildWaits) {
  // A grandchild forked while its parent's other thread held the lock; that parent is then killed.
  Shared<Arena> a;
  Child parent([&]() -> int {
    std::thread t([&] {
      if (a->lock.acquire() != LockResult::acquired) std::abort();
      a->stage.store(1);
      sleep_until_killed();
    });
    while (a->stage.load() != 1) std::this_thread::sleep_for(1ms);
    Child grandchild([&] {
      a->child_result.store(static_cast<int>(a->lock.acquire(Clock::now() + 10s)));
      a->lock.mark_consistent();
      if (a->lock.held_by_this_thread()) a->lock.unlock();
      return 0;
    });
    a->child_tid.store(grandchild.pid());
    (void)grandchild.wait(std::chrono::seconds(20));  // killed before this returns
    t.join();
    return 0;
  });
  ASSERT_TRUE(eventually([&] { return a->child_tid.load() != 0; }));
  ASSERT_TRUE(eventually([&] { return (a->lock.debug_word() & FUTEX_WAITERS) != 0; }));
  parent.kill(SIGKILL);
  ASSERT_EQ(parent.wait(5s), -SIGKILL);
  // The grandchild (now an orphan) gets the lock with owner_died.
  ASSERT_TRUE(eventually([&] { return a->child_result.load() != -1; }, 5s));
  EXPECT_EQ(a->child_result.load(), static_cast<int>(LockResult::owner_died));
  ASSERT_TRUE(eventually([&] { return a->lock.debug_word() == 0; }, 5s));
}

TEST(LocksFork, ChildsOwnLocksAreRobustToo) {
  // After fork the child's robust list is its own: a lock it takes is marked when it is killed.
  Shared<Arena> a;
  ASSERT_EQ(a->rlock.acquire(), LockResult::acquired);  // parent holds something across the fork
  Child child([&]() -> int {
    if (a->lock.acquire() != LockResult::acquired) return 1;
    a->stage.store(1);
    sleep_until_killed();
  });
  ASSERT_TRUE(eventually([&] { return a->stage.load() == 1; }));
  child.kill(SIGKILL);
  ASSERT_EQ(child.wait(5s), -SIGKILL);
  EXPECT_EQ(a->lock.acquire(), LockResult::owner_died);
  a->lock.mark_consistent();
  a->lock.unlock();
  // The parent's own lock was not touched by the child's death.
  EXPECT_TRUE(a->rlock.held_by_this_thread());
  EXPECT_EQ(a->rlock.debug_word() & FUTEX_OWNER_DIED, 0u);
  a->rlock.unlock();
}
