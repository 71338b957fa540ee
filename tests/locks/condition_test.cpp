// Condition across processes: a ping-pong of many rounds between two processes (each round needs a
// wake-up that a lost wake-up would hang; each wait is bounded so a hang fails instead of
// blocking), notify_all waking waiters in several processes, waiting with an RLock held
// recursively, std::unique_lock + predicate, and misuse (waiting without holding the lock).
#include <gtest/gtest.h>

#include <atomic>
#include <mutex>
#include <vector>

#include "lock_test_util.hpp"
#include "shmkit/locks/lock.hpp"
#include "testing.hpp"

using namespace shmkit;
using namespace std::chrono_literals;
using shmkit::testing::Child;
using shmkit::testing::eventually;
using shmkit::testing::Shared;
using Clock = std::chrono::steady_clock;

namespace {

struct Arena {
  Lock lock;
  RLock rlock;
  Condition cond;
  std::int64_t turn = 0;  // protected by lock: even = parent's turn, odd = child's
  int woken = 0;          // protected by lock
  bool go = false;        // protected by lock
  std::atomic<int> waiting{0};
};

constexpr std::int64_t kRounds = 20000;

// Waits (bounded) until turn has the given parity; returns false on a 5 s stall.
bool wait_turn(Arena& a, std::unique_lock<Lock>& lk, std::int64_t parity) {
  return a.cond.wait_for(lk, 5s, [&] { return a.turn % 2 == parity; });
}

}  // namespace

TEST(LocksCondition, PingPongAcrossProcessesLosesNoWakeup) {
  Shared<Arena> a;
  Child child([&] {
    for (std::int64_t i = 0; i < kRounds; ++i) {
      std::unique_lock<Lock> lk(a->lock);
      if (!wait_turn(*a, lk, 1)) return 1;
      ++a->turn;
      a->cond.notify_one();
    }
    return 0;
  });
  for (std::int64_t i = 0; i < kRounds; ++i) {
    std::unique_lock<Lock> lk(a->lock);
    ASSERT_TRUE(wait_turn(*a, lk, 0)) << "stalled at round " << i;
    ++a->turn;
    a->cond.notify_one();
  }
  EXPECT_EQ(child.wait(30s), 0);
  EXPECT_EQ(a->turn, 2 * kRounds);
}

TEST(LocksCondition, NotifyOutsideTheLockLosesNoWakeup) {
  // The notifier changes the state under the lock but notifies after unlocking.
  Shared<Arena> a;
  Child child([&] {
    for (std::int64_t i = 0; i < kRounds / 2; ++i) {
      {
        std::unique_lock<Lock> lk(a->lock);
        if (!wait_turn(*a, lk, 1)) return 1;
        ++a->turn;
      }
      a->cond.notify_all();
    }
    return 0;
  });
  for (std::int64_t i = 0; i < kRounds / 2; ++i) {
    {
      std::unique_lock<Lock> lk(a->lock);
      ASSERT_TRUE(wait_turn(*a, lk, 0)) << "stalled at round " << i;
      ++a->turn;
    }
    a->cond.notify_all();
  }
  EXPECT_EQ(child.wait(30s), 0);
}

TEST(LocksCondition, NotifyAllWakesWaitersInEveryProcess) {
  Shared<Arena> a;
  std::vector<Child> kids;
  for (int i = 0; i < 4; ++i)
    kids.emplace_back([&] {
      std::unique_lock<Lock> lk(a->lock);
      a->waiting.fetch_add(1);
      if (!a->cond.wait_for(lk, 10s, [&] { return a->go; })) return 1;
      ++a->woken;
      return 0;
    });
  ASSERT_TRUE(eventually([&] { return a->waiting.load() == 4; }));
  std::this_thread::sleep_for(20ms);
  {
    std::lock_guard<Lock> g(a->lock);
    a->go = true;
  }
  a->cond.notify_all();
  for (auto& k : kids) EXPECT_EQ(k.wait(15s), 0);
  EXPECT_EQ(a->woken, 4);
}

TEST(LocksCondition, RLockHeldRecursivelyIsFullyReleasedWhileWaiting) {
  Shared<Arena> a;
  ASSERT_EQ(a->rlock.acquire(), LockResult::acquired);
  ASSERT_EQ(a->rlock.acquire(), LockResult::acquired);
  ASSERT_EQ(a->rlock.acquire(), LockResult::acquired);
  Child notifier([&] {
    // Can take the lock only if the waiter released all three levels.
    if (a->rlock.acquire(Clock::now() + 5s) != LockResult::acquired) return 1;
    a->go = true;
    a->cond.notify_one();
    a->rlock.unlock();
    return 0;
  });
  while (!a->go) ASSERT_NE(a->cond.wait(a->rlock, Clock::now() + 5s), WaitResult::timed_out);
  EXPECT_EQ(a->rlock.depth(), 3u);
  EXPECT_EQ(notifier.wait(5s), 0);
  for (int i = 0; i < 3; ++i) a->rlock.unlock();
  EXPECT_FALSE(a->rlock.held_by_this_thread());
}

TEST(LocksCondition, WaitWithoutHoldingTheLockThrows) {
  Shared<Arena> a;
  try {
    (void)a->cond.wait(a->lock, Clock::now() + 10ms);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::invalid_argument);
  }
  EXPECT_THROW((void)a->cond.wait(a->rlock), Error);
}
