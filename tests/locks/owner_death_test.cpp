// Owner death: a process (or thread) SIGKILLed / exiting while it holds a Lock, an RLock held
// recursively, or a lock re-acquired inside Condition::wait. With a waiter already blocked, the
// waiter must get LockResult::owner_died within 100 ms of the owner's death (measured from the
// waitpid() that reaps the killed owner; the kernel marks the word before the process becomes a
// zombie). Without waiters, the next acquirer gets owner_died. A waiter killed while asleep in
// Condition::wait does not hold the lock, so nobody sees owner_died for it. Also an exec'd owner
// mapping the lock at another address.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mman.h>

#include <atomic>
#include <cstdio>
#include <new>
#include <thread>
#include <vector>

#include "lock_test_util.hpp"
#include "shmkit/locks/lock.hpp"
#include "testing.hpp"

using namespace shmkit;
using shmkit::testing::Child;
using shmkit::testing::eventually;
using shmkit::testing::mono_ns;
using shmkit::testing::Shared;
using shmkit::testing::sleep_until_killed;

namespace {

constexpr std::int64_t kPromptNs = 100'000'000;  // 100 ms

struct Arena {
  Lock lock;
  RLock rlock;
  Condition cond;
  std::atomic<int> stage{0};
  std::atomic<int> result[4] = {-1, -1, -1, -1};
  std::atomic<std::int64_t> acquired_ns[4] = {0, 0, 0, 0};
  std::atomic<std::uint32_t> depth_after{0};
  std::atomic<int> notified{0};
  int data = 0;
};

template <class L>
L& lock_of(Arena& a);
template <>
Lock& lock_of<Lock>(Arena& a) { return a.lock; }
template <>
RLock& lock_of<RLock>(Arena& a) { return a.rlock; }

// A child that acquires `depth` times (depth > 1 only for RLock), says so, and waits to be killed.
template <class L>
Child start_owner(Arena& a, int depth) {
  Child owner([&a, depth] {
    L& l = lock_of<L>(a);
    for (int i = 0; i < depth; ++i)
      if (l.acquire() != LockResult::acquired) return 1;
    a.data = 42;  // "half-written" protected data
    a.stage.store(1);
    sleep_until_killed();
  });
  EXPECT_TRUE(eventually([&] { return a.stage.load() == 1; }));
  return owner;
}

// A child that blocks in acquire() and records what it got and when; then repairs and unlocks.
template <class L>
Child start_waiter(Arena& a, int slot) {
  return Child([&a, slot] {
    L& l = lock_of<L>(a);
    LockResult r = l.acquire();
    a.acquired_ns[slot].store(mono_ns());
    a.result[slot].store(static_cast<int>(r));
    if constexpr (std::is_same_v<L, RLock>) a.depth_after.store(l.depth());
    if (r == LockResult::owner_died) l.mark_consistent();
    if (r == LockResult::owner_died || r == LockResult::acquired) l.unlock();
    return 0;
  });
}

// Waits until the lock word says a waiter has gone to sleep (FUTEX_WAITERS), then a little more so
// it is really inside FUTEX_WAIT rather than between setting the flag and the system call.
template <class L>
void wait_for_sleeper(L& l) {
  ASSERT_TRUE(eventually([&] { return (l.debug_word() & FUTEX_WAITERS) != 0; }));
  std::this_thread::sleep_for(std::chrono::milliseconds(30));
}

template <class L>
void kill_owner_with_waiter(int depth) {
  Shared<Arena> a;
  L& l = lock_of<L>(*a);
  Child owner = start_owner<L>(*a, depth);
  Child waiter = start_waiter<L>(*a, 0);
  wait_for_sleeper(l);
  ASSERT_EQ(a->result[0].load(), -1) << "the waiter must still be blocked";
  const std::int64_t kill_ns = mono_ns();
  owner.kill(SIGKILL);
  ASSERT_EQ(owner.wait(std::chrono::seconds(5)), -SIGKILL);
  const std::int64_t death_ns = mono_ns();
  ASSERT_EQ(waiter.wait(std::chrono::seconds(5)), 0) << "the blocked waiter was not woken";
  EXPECT_EQ(a->result[0].load(), static_cast<int>(LockResult::owner_died));
  const std::int64_t delay = a->acquired_ns[0].load() - death_ns;
  EXPECT_LT(delay, kPromptNs) << "waiter acquired " << delay / 1000 << " us after the owner was reaped";
  const std::int64_t since_kill = a->acquired_ns[0].load() - kill_ns;
  EXPECT_GT(since_kill, 0);
  EXPECT_LT(since_kill, kPromptNs) << "waiter acquired " << since_kill / 1000 << " us after kill()";
  std::printf("blocked waiter acquired %lld us after kill(SIGKILL), %lld us after the owner was "
              "reaped (negative: before waitpid returned)\n",
              static_cast<long long>(since_kill / 1000), static_cast<long long>(delay / 1000));
  if constexpr (std::is_same_v<L, RLock>) {
    EXPECT_EQ(a->depth_after.load(), 1u);
  }
  EXPECT_EQ(a->data, 42);
  // Repaired and released by the waiter: consistent again.
  EXPECT_EQ(l.acquire(), LockResult::acquired);
  l.unlock();
}

template <class L>
void kill_owner_without_waiter(int depth) {
  Shared<Arena> a;
  L& l = lock_of<L>(*a);
  Child owner = start_owner<L>(*a, depth);
  owner.kill(SIGKILL);
  ASSERT_EQ(owner.wait(std::chrono::seconds(5)), -SIGKILL);
  // The kernel replaced the owner by FUTEX_OWNER_DIED (and left no thread id in the word).
  EXPECT_EQ(l.debug_word() & (FUTEX_OWNER_DIED | FUTEX_TID_MASK), static_cast<std::uint32_t>(FUTEX_OWNER_DIED));
  ASSERT_EQ(l.acquire(), LockResult::owner_died);
  EXPECT_TRUE(l.held_by_this_thread());
  if constexpr (std::is_same_v<L, RLock>) {
    EXPECT_EQ(l.depth(), 1u);
  }
  l.mark_consistent();
  l.unlock();
  EXPECT_EQ(l.acquire(), LockResult::acquired);
  l.unlock();
}

}  // namespace

TEST(LocksOwnerDeath, LockOwnerKilledWithWaiterBlocked) { kill_owner_with_waiter<Lock>(1); }
TEST(LocksOwnerDeath, LockOwnerKilledNoWaiter) { kill_owner_without_waiter<Lock>(1); }
TEST(LocksOwnerDeath, RLockHeldRecursivelyOwnerKilledWithWaiterBlocked) { kill_owner_with_waiter<RLock>(3); }
TEST(LocksOwnerDeath, RLockHeldRecursivelyOwnerKilledNoWaiter) { kill_owner_without_waiter<RLock>(3); }

TEST(LocksOwnerDeath, SeveralWaitersBlockedAllProceed) {
  // One waiter gets owner_died (and repairs); the others then get the lock normally, one by one.
  Shared<Arena> a;
  Child owner = start_owner<Lock>(*a, 1);
  std::vector<Child> waiters;
  for (int i = 0; i < 3; ++i) waiters.push_back(start_waiter<Lock>(*a, i));
  wait_for_sleeper(a->lock);
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  owner.kill(SIGKILL);
  ASSERT_EQ(owner.wait(std::chrono::seconds(5)), -SIGKILL);
  const std::int64_t death_ns = mono_ns();
  int died = 0, acquired = 0;
  std::int64_t first_ns = INT64_MAX;
  for (int i = 0; i < 3; ++i) {
    ASSERT_EQ(waiters[static_cast<std::size_t>(i)].wait(std::chrono::seconds(5)), 0);
    died += a->result[i].load() == static_cast<int>(LockResult::owner_died);
    acquired += a->result[i].load() == static_cast<int>(LockResult::acquired);
    first_ns = std::min(first_ns, a->acquired_ns[i].load());
  }
  EXPECT_EQ(died, 1);
  EXPECT_EQ(acquired, 2);
  EXPECT_LT(first_ns - death_ns, kPromptNs);
}

TEST(LocksOwnerDeath, ThreadExitingWhileHoldingLock) {
  // Not only process death: a thread that ends while holding the lock (pthread_exit through the
  // kernel's robust list) leaves it owner-died for the other threads of its own process.
  Shared<Arena> a;
  std::thread t([&] { ASSERT_EQ(a->lock.acquire(), LockResult::acquired); });
  t.join();
  EXPECT_EQ(a->lock.acquire(), LockResult::owner_died);
  a->lock.mark_consistent();
  a->lock.unlock();
}

TEST(LocksOwnerDeath, WaiterKilledInsideConditionWaitDoesNotHoldTheLock) {
  Shared<Arena> a;
  Child waiter([&] {
    if (a->lock.acquire() != LockResult::acquired) return 1;
    a->stage.store(1);
    for (;;) (void)a->cond.wait(a->lock);  // never notified
  });
  ASSERT_TRUE(eventually([&] { return a->stage.load() == 1; }));
  // The waiter released the lock inside wait(): we can take it, and it is consistent.
  ASSERT_TRUE(eventually([&] { return a->lock.try_acquire() == LockResult::acquired; }));
  a->lock.unlock();
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  waiter.kill(SIGKILL);
  ASSERT_EQ(waiter.wait(std::chrono::seconds(5)), -SIGKILL);
  EXPECT_EQ(a->lock.acquire(), LockResult::acquired);
  a->cond.notify_all();  // a dead waiter's registration costs a wake, never a hang
  a->lock.unlock();
}

TEST(LocksOwnerDeath, OwnerKilledAfterReacquiringInConditionWaitWithWaiterBlocked) {
  // The owner went through Condition::wait (released, slept, was notified, re-acquired) and is
  // killed holding the lock again; another process is blocked on the lock meanwhile.
  Shared<Arena> a;
  Child owner([&] {
    if (a->rlock.acquire() != LockResult::acquired) return 1;
    if (a->rlock.acquire() != LockResult::acquired) return 1;  // depth 2 through the wait
    a->stage.store(1);
    while (a->stage.load() != 2) (void)a->cond.wait(a->rlock);
    if (a->rlock.depth() != 2) return 2;
    a->stage.store(3);
    sleep_until_killed();
  });
  ASSERT_TRUE(eventually([&] { return a->stage.load() == 1; }));
  ASSERT_TRUE(eventually([&] { return a->rlock.try_acquire() == LockResult::acquired; }));
  a->stage.store(2);
  a->cond.notify_one();
  a->rlock.unlock();
  ASSERT_TRUE(eventually([&] { return a->stage.load() == 3; }));
  Child waiter = start_waiter<RLock>(*a, 0);
  wait_for_sleeper(a->rlock);
  owner.kill(SIGKILL);
  ASSERT_EQ(owner.wait(std::chrono::seconds(5)), -SIGKILL);
  const std::int64_t death_ns = mono_ns();
  ASSERT_EQ(waiter.wait(std::chrono::seconds(5)), 0);
  EXPECT_EQ(a->result[0].load(), static_cast<int>(LockResult::owner_died));
  EXPECT_LT(a->acquired_ns[0].load() - death_ns, kPromptNs);
}

TEST(LocksOwnerDeath, ConditionWaiterGetsOwnerDiedWhenReacquiring) {
  // A waiter asleep in Condition::wait is notified by a process that is then killed while still
  // holding the lock: the waiter's re-acquire returns WaitResult::owner_died, with the lock held.
  Shared<Arena> a;
  Child waiter([&] {
    if (a->lock.acquire() != LockResult::acquired) return 1;
    a->stage.store(1);
    WaitResult r = WaitResult::notified;
    while (a->stage.load() != 2 && r == WaitResult::notified) r = a->cond.wait(a->lock);
    a->acquired_ns[0].store(mono_ns());
    a->result[0].store(static_cast<int>(r));
    if (!a->lock.held_by_this_thread()) return 3;
    a->lock.mark_consistent();
    a->lock.unlock();
    return 0;
  });
  ASSERT_TRUE(eventually([&] { return a->stage.load() == 1; }));
  Child notifier([&]() -> int {
    while (a->lock.try_acquire() != LockResult::acquired) std::this_thread::yield();
    a->stage.store(2);
    a->cond.notify_all();
    a->notified.store(1);
    sleep_until_killed();
  });
  ASSERT_TRUE(eventually([&] { return a->notified.load() == 1; }));
  wait_for_sleeper(a->lock);  // the woken waiter now sleeps on the lock word
  notifier.kill(SIGKILL);
  ASSERT_EQ(notifier.wait(std::chrono::seconds(5)), -SIGKILL);
  const std::int64_t death_ns = mono_ns();
  ASSERT_EQ(waiter.wait(std::chrono::seconds(5)), 0);
  EXPECT_EQ(a->result[0].load(), static_cast<int>(WaitResult::owner_died));
  EXPECT_LT(a->acquired_ns[0].load() - death_ns, kPromptNs);
  EXPECT_EQ(a->lock.acquire(), LockResult::acquired);
  a->lock.unlock();
}

TEST(LocksOwnerDeath, ExecdOwnerMappingTheLockAtAnotherAddress) {
  // The owner is a fresh process image (fork + exec) that maps the segment itself, so the lock sits
  // at a different virtual address there; the futex is keyed by file + offset and the kernel still
  // marks it when the owner is killed.
  shmkit::testing::ShmNameGuard name(shmkit::testing::unique_name("lockexec"));
  const int fd = sys::shm_open(name.c_str(), O_CREAT | O_EXCL | O_RDWR, 0600);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(sys::ftruncate(fd, 4096), 0);
  void* p = nullptr;
  ASSERT_EQ(sys::mmap(&p, nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0), 0);
  (void)sys::close(fd);
  auto* a = new (p) Arena();
  Child owner = shmkit::testing::spawn_helper("hold_lock", {name.name()});
  ASSERT_TRUE(eventually([&] { return a->stage.load() == 1; }));
  Child waiter = start_waiter<Lock>(*a, 0);
  wait_for_sleeper(a->lock);
  owner.kill(SIGKILL);
  ASSERT_EQ(owner.wait(std::chrono::seconds(5)), -SIGKILL);
  const std::int64_t death_ns = mono_ns();
  ASSERT_EQ(waiter.wait(std::chrono::seconds(5)), 0);
  EXPECT_EQ(a->result[0].load(), static_cast<int>(LockResult::owner_died));
  EXPECT_LT(a->acquired_ns[0].load() - death_ns, kPromptNs);
  a->~Arena();
  (void)sys::munmap(p, 4096);
}

SHMKIT_TEST_HELPER(hold_lock) {
  const int fd = sys::shm_open(args.at(0).c_str(), O_RDWR, 0);
  if (fd < 0) return 2;
  void* p = nullptr;
  // Map twice and use the second mapping, so the address differs from the parent's even if the
  // layouts happened to coincide.
  void* unused = nullptr;
  if (sys::mmap(&unused, nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0) < 0) return 3;
  if (sys::mmap(&p, nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0) < 0) return 3;
  auto* a = static_cast<Arena*>(p);
  if (a->lock.acquire() != LockResult::acquired) return 4;
  a->stage.store(1);
  sleep_until_killed();
}
