// Pid reuse: the owner is killed, and then a new process is made to get the dead owner's pid (and
// so its thread id) — by writing /proc/sys/kernel/ns_last_pid when we may (root), otherwise by
// forking until the pid comes round (pid_max 32768). Owner-death detection must not be fooled: a
// liveness check on the pid would now say "alive", but the kernel already replaced the tid in the
// word by FUTEX_OWNER_DIED at the moment of death. Both the process wearing the recycled pid and a
// third process get owner_died; the recycled process is not mistaken for the owner (it can neither
// unlock the lock nor is it told it already holds it).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>

#include <atomic>
#include <string>

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

namespace {

struct Arena {
  Lock lock;
  RLock rlock;
  std::atomic<int> stage{0};
  std::atomic<int> result_recycled{-1};
  std::atomic<int> unlock_threw{-1};
};

// Asks the kernel to hand out `pid` next (root only); false if we cannot.
bool set_next_pid(pid_t pid) {
  const int fd = sys::open("/proc/sys/kernel/ns_last_pid", O_WRONLY);
  if (fd < 0) return false;
  const std::string s = std::to_string(pid - 1);
  const bool ok = sys::write(fd, s.data(), s.size()) == static_cast<ssize_t>(s.size());
  (void)sys::close(fd);
  return ok;
}

// Starts `body` in a process whose pid is `want`; nullopt-like (pid -1 Child) when it did not work.
template <class Body>
Child fork_with_pid(pid_t want, Body body, Arena& a) {
  const auto deadline = std::chrono::steady_clock::now() + 15s;
  bool forced = true;
  while (std::chrono::steady_clock::now() < deadline) {
    if (forced) forced = set_next_pid(want);
    Child c([&a, want, body]() -> int {
      if (::getpid() != want) return 200;  // not the one: exit at once
      (void)a;
      return body();
    });
    if (c.pid() == want) return c;
    (void)c.wait(5s);
  }
  return Child(static_cast<pid_t>(-1));
}

template <class L>
void run(L& lock, Arena& a) {
  Child owner([&]() -> int {
    if (lock.acquire() != LockResult::acquired) return 1;
    if constexpr (std::is_same_v<L, RLock>) {
      if (lock.acquire() != LockResult::acquired) return 1;
    }
    a.stage.store(1);
    sleep_until_killed();
  });
  const pid_t dead_pid = owner.pid();
  ASSERT_TRUE(eventually([&] { return a.stage.load() == 1; }));
  ASSERT_EQ(lock.debug_word() & FUTEX_TID_MASK, static_cast<std::uint32_t>(dead_pid));
  owner.kill(SIGKILL);
  ASSERT_EQ(owner.wait(5s), -SIGKILL);
  // The kernel has already removed the tid: nothing in the word refers to the dead pid any more.
  ASSERT_EQ(lock.debug_word() & FUTEX_TID_MASK, 0u);

  Child recycled = fork_with_pid(
      dead_pid,
      [&]() -> int {
        // This process now has the dead owner's pid (and tid). It must not be taken for the owner.
        if (lock.held_by_this_thread()) return 10;
        try {
          lock.unlock();
          a.unlock_threw.store(0);
        } catch (const Error&) {
          a.unlock_threw.store(1);
        }
        a.stage.store(2);
        while (a.stage.load() != 3) std::this_thread::sleep_for(1ms);
        a.result_recycled.store(static_cast<int>(lock.acquire()));
        lock.mark_consistent();
        lock.unlock();
        return 0;
      },
      a);
  ASSERT_EQ(recycled.pid(), dead_pid) << "could not get the dead owner's pid back within 15 s";
  ASSERT_TRUE(eventually([&] { return a.stage.load() == 2; }));
  // The dead owner's pid is alive again: a kill(pid, 0) liveness check would say "owner alive".
  EXPECT_EQ(::kill(dead_pid, 0), 0);
  EXPECT_EQ(a.unlock_threw.load(), 1) << "a process with the dead owner's pid could unlock the lock";
  // A third party (this process) is told the owner died, although that pid lives.
  ASSERT_EQ(lock.acquire(), LockResult::owner_died);
  // ... and the recycled-pid process waits on it like anyone else, then gets it normally.
  a.stage.store(3);
  std::this_thread::sleep_for(20ms);
  lock.mark_consistent();
  lock.unlock();
  ASSERT_EQ(recycled.wait(10s), 0);
  EXPECT_EQ(a.result_recycled.load(), static_cast<int>(LockResult::acquired));
}

}  // namespace

TEST(LocksPidReuse, LockOwnerDiesAndItsPidIsRecycled) {
  Shared<Arena> a;
  run(a->lock, *a);
}

TEST(LocksPidReuse, RLockOwnerDiesAndItsPidIsRecycled) {
  Shared<Arena> a;
  run(a->rlock, *a);
}
