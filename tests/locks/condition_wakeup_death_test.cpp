// A Condition's notify_one must not die with the waiter it woke (issue 14, item 12). Two waiter
// processes sleep in Condition::wait for a flag; the notifier sets the flag under the lock,
// notify_one()s, and — still holding the lock, so the woken waiter cannot have re-acquired it —
// finds which waiter left its condition wait (from /proc/<pid>/syscall) and SIGKILLs it. The other
// waiter must then wake and see the flag within a bounded time, though nobody notifies again.
// Before the fix it slept on until its own deadline.
#include <gtest/gtest.h>
#include <signal.h>

#include <atomic>
#include <cstdint>
#include <fstream>
#include <sstream>
#include <string>
#include <sys/syscall.h>

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
  Condition cond;
  bool ready = false;  // protected by lock
  std::atomic<int> waiting{0};
};

// A waiter that gives up after 8 s (exit 2), far beyond the time the test allows it.
int wait_for_ready(Arena& a) {
  if (a.lock.acquire() != LockResult::acquired) return 1;
  a.waiting.fetch_add(1);
  const auto deadline = Clock::now() + 8s;
  while (!a.ready) {
    const WaitResult r = a.cond.wait(a.lock, deadline);
    if (r == WaitResult::not_recoverable) return 3;
    if (r == WaitResult::owner_died) a.lock.mark_consistent();
    if (r == WaitResult::timed_out && !a.ready) {
      a.lock.unlock();
      return 2;
    }
  }
  a.lock.unlock();
  return 0;
}

// Whether `pid` is asleep in a wait on the condition at [lo, hi): futex_waitv (shmkit's condition
// sleep), or FUTEX_WAIT on a word inside the condition. Any other state — running, or asleep on the
// lock's word while re-acquiring — means it has left the condition wait.
bool in_condition_wait(pid_t pid, std::uintptr_t lo, std::uintptr_t hi) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/syscall");
  std::string line;
  if (!std::getline(f, line)) return false;
  std::istringstream in(line);
  long nr = -1;
  std::string arg0;
  if (!(in >> nr >> arg0)) return false;  // "running"
  if (nr == SYS_futex_waitv) return true;
  if (nr != SYS_futex) return false;
  const std::uintptr_t addr = std::stoull(arg0, nullptr, 16);
  return addr >= lo && addr < hi;
}

}  // namespace

TEST(LocksConditionWakeupDeath, ANotifyOneWhoseWokenWaiterIsKilledWakesAnotherWaiter) {
  Shared<Arena> a;
  const auto lo = reinterpret_cast<std::uintptr_t>(&a->cond);
  const auto hi = lo + sizeof(Condition);
  Child w1([&] { return wait_for_ready(*a); });
  Child w2([&] { return wait_for_ready(*a); });
  ASSERT_TRUE(eventually([&] {
    return a->waiting.load() == 2 && in_condition_wait(w1.pid(), lo, hi) && in_condition_wait(w2.pid(), lo, hi);
  })) << "the waiters never both slept in the condition wait";

  ASSERT_EQ(a->lock.acquire(), LockResult::acquired);
  a->ready = true;
  a->cond.notify_one();
  // Still holding the lock: the woken waiter is between its futex wake-up and re-acquiring.
  Child* woken = nullptr;
  ASSERT_TRUE(eventually([&] {
    if (!in_condition_wait(w1.pid(), lo, hi)) woken = &w1;
    else if (!in_condition_wait(w2.pid(), lo, hi)) woken = &w2;
    return woken != nullptr;
  })) << "notify_one woke neither waiter";
  Child& other = woken == &w1 ? w2 : w1;
  woken->kill(SIGKILL);
  EXPECT_EQ(woken->wait(5s), -SIGKILL);
  a->lock.unlock();

  const auto t0 = Clock::now();
  const int rc = other.wait(3s);
  if (rc == -1000) other.kill(SIGKILL);
  EXPECT_EQ(rc, 0) << "the remaining waiter did not wake after the woken one was killed (-1000: "
                      "still asleep 3 s later; 2: its own 8 s deadline passed)";
  EXPECT_LT(Clock::now() - t0, 3s);
  // The dead waiter's claim slot is free again once the wake-up was passed on: a new waiter
  // sleeps and is woken by an ordinary notify.
  a->ready = false;  // no other process is left
  a->waiting.store(0);
  Child w3([&] { return wait_for_ready(*a); });
  ASSERT_TRUE(eventually([&] { return a->waiting.load() == 1 && in_condition_wait(w3.pid(), lo, hi); }));
  ASSERT_EQ(a->lock.acquire(), LockResult::acquired);
  a->ready = true;
  a->cond.notify_one();
  a->lock.unlock();
  EXPECT_EQ(w3.wait(5s), 0);
}
