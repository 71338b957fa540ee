// Mutual exclusion between processes and threads: several forked processes (and threads inside
// them) increment one shared, deliberately non-atomic counter under each lock kind; the counter
// must end at exactly the number of increments. Also: a constructed lock is all-zero bytes.
#include <gtest/gtest.h>

#include <atomic>
#include <cstring>
#include <mutex>
#include <thread>
#include <vector>

#include "lock_test_util.hpp"
#include "shmkit/locks/lock.hpp"
#include "shmkit/locks/semaphore.hpp"
#include "testing.hpp"

using namespace shmkit;
using shmkit::testing::Child;
using shmkit::testing::Shared;

namespace {

constexpr int kProcs = 4;
constexpr int kIters = 200000;

struct Arena {
  Lock lock;
  RLock rlock;
  Semaphore sem{1};
  // Read-modify-write in two steps, with a volatile access in between, so that an exclusion bug
  // loses increments instead of being hidden by a single add instruction.
  volatile std::int64_t counter = 0;
  std::atomic<int> ready{0};  // start barrier: every process starts counting at the same time
  std::atomic<bool> go{false};
};

void bump(volatile std::int64_t& c) {
  std::int64_t v = c;
  c = v + 1;
}

template <class Body>
void run_procs(Arena& a, Body body) {
  std::vector<Child> kids;
  for (int p = 0; p < kProcs; ++p)
    kids.emplace_back([&] {
      a.ready.fetch_add(1);
      while (!a.go.load()) std::this_thread::yield();
      return body();
    });
  ASSERT_TRUE(shmkit::testing::eventually([&] { return a.ready.load() == kProcs; }));
  a.go.store(true);
  for (auto& k : kids) ASSERT_EQ(k.wait(std::chrono::seconds(20)), 0);
}

}  // namespace

TEST(LocksMutualExclusion, ConstructedLocksAreAllZeroBytes) {
  alignas(8) unsigned char buf[sizeof(Lock)];
  std::memset(buf, 0xab, sizeof buf);
  new (buf) Lock();
  for (unsigned char b : buf) EXPECT_EQ(b, 0);
  std::memset(buf, 0xab, sizeof buf);
  new (buf) RLock();
  for (unsigned char b : buf) EXPECT_EQ(b, 0);
  alignas(8) unsigned char cbuf[sizeof(Condition)];
  std::memset(cbuf, 0xab, sizeof cbuf);
  new (cbuf) Condition();
  for (unsigned char b : cbuf) EXPECT_EQ(b, 0);
}

TEST(LocksMutualExclusion, LockAcrossProcesses) {
  Shared<Arena> a;
  run_procs(*a, [&] {
    for (int i = 0; i < kIters; ++i) {
      if (a->lock.acquire() != LockResult::acquired) return 1;
      bump(a->counter);
      a->lock.unlock();
    }
    return 0;
  });
  EXPECT_EQ(a->counter, std::int64_t{kProcs} * kIters);
  EXPECT_EQ(a->lock.debug_word(), 0u) << "unlocked and no stale waiter flag";
}

TEST(LocksMutualExclusion, RLockRecursiveAcrossProcesses) {
  Shared<Arena> a;
  run_procs(*a, [&] {
    for (int i = 0; i < kIters; ++i) {
      if (a->rlock.acquire() != LockResult::acquired) return 1;
      if (a->rlock.acquire() != LockResult::acquired) return 2;  // depth 2
      if (a->rlock.depth() != 2) return 3;
      bump(a->counter);
      a->rlock.unlock();
      bump(a->counter);
      a->rlock.unlock();
    }
    return 0;
  });
  EXPECT_EQ(a->counter, std::int64_t{2} * kProcs * kIters);
}

TEST(LocksMutualExclusion, LockGuardWithThreadsInsideProcesses) {
  Shared<Arena> a;
  run_procs(*a, [&] {
    std::vector<std::thread> ts;
    for (int t = 0; t < 2; ++t)
      ts.emplace_back([&] {
        for (int i = 0; i < kIters / 2; ++i) {
          std::lock_guard<Lock> g(a->lock);
          bump(a->counter);
        }
      });
    for (auto& t : ts) t.join();
    return 0;
  });
  EXPECT_EQ(a->counter, std::int64_t{kProcs} * kIters);
}

TEST(LocksMutualExclusion, ScopedLockOfTwoLocks) {
  Shared<Arena> a;
  run_procs(*a, [&] {
    for (int i = 0; i < kIters / 4; ++i) {
      std::scoped_lock g(a->lock, a->rlock);
      bump(a->counter);
    }
    return 0;
  });
  EXPECT_EQ(a->counter, std::int64_t{kProcs} * (kIters / 4));
}

TEST(LocksMutualExclusion, BinarySemaphoreAcrossProcesses) {
  Shared<Arena> a;
  run_procs(*a, [&] {
    for (int i = 0; i < kIters / 2; ++i) {
      a->sem.wait();
      bump(a->counter);
      a->sem.post();
    }
    return 0;
  });
  EXPECT_EQ(a->counter, std::int64_t{kProcs} * (kIters / 2));
  EXPECT_EQ(a->sem.value(), 1u);
}
