// Lock words the kernel never cleaned up — forged by a hostile writer, or left in a segment that
// outlived its kernel — must neither hang nor corrupt: a word naming a thread that does not exist
// is taken over as owner_died after the spin phase (no deadline needed); a word naming the calling
// thread's own id, which it never locked, is not mistaken for a lock it holds (unlock throws,
// held_by_this_thread is false, acquire takes it over as owner_died instead of aborting).
#include <gtest/gtest.h>

#include <cstring>

#include "lock_test_util.hpp"
#include "shmkit/locks/lock.hpp"
#include "shmkit/sys/syscall.hpp"
#include "testing.hpp"

using namespace shmkit;
using namespace std::chrono_literals;
using shmkit::testing::Child;
using shmkit::testing::Shared;

namespace {

struct Arena {
  Lock lock;
  RLock rlock;
};

template <class L>
void forge(L& l, std::uint32_t word) {
  std::memcpy(static_cast<void*>(&l), &word, sizeof word);  // the futex word is at offset 0
}

pid_t dead_tid() {
  Child c([] { return 0; });
  const pid_t p = c.pid();
  EXPECT_EQ(c.wait(), 0);
  return p;
}

}  // namespace

TEST(LocksForgedWord, OwnerThatDoesNotExistIsTakenOverWithoutADeadline) {
  Shared<Arena> a;
  const auto ghost = static_cast<std::uint32_t>(dead_tid());
  forge(a->lock, ghost | FUTEX_WAITERS);
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(a->lock.acquire(), LockResult::owner_died);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 1s);
  EXPECT_TRUE(a->lock.held_by_this_thread());
  a->lock.mark_consistent();
  a->lock.unlock();
  EXPECT_EQ(a->lock.acquire(), LockResult::acquired);
  a->lock.unlock();
  // try_acquire does not probe (it never sleeps): it reports the lock as held.
  forge(a->rlock, ghost);
  EXPECT_EQ(a->rlock.try_acquire(), LockResult::would_block);
  EXPECT_EQ(a->rlock.acquire(), LockResult::owner_died);
  EXPECT_EQ(a->rlock.depth(), 1u);
  a->rlock.mark_consistent();
  a->rlock.unlock();
}

TEST(LocksForgedWord, WordNamingOurOwnThreadIsNotOurs) {
  Shared<Arena> a;
  const auto me = static_cast<std::uint32_t>(sys::gettid());
  forge(a->lock, me);
  EXPECT_FALSE(a->lock.held_by_this_thread());
  EXPECT_THROW(a->lock.unlock(), Error);
  EXPECT_EQ(a->lock.acquire(), LockResult::owner_died) << "taken over, not a self-deadlock abort";
  a->lock.mark_consistent();
  a->lock.unlock();
  forge(a->rlock, me | FUTEX_WAITERS);
  EXPECT_EQ(a->rlock.depth(), 0u);
  EXPECT_THROW(a->rlock.unlock(), Error);
  EXPECT_EQ(a->rlock.acquire(), LockResult::owner_died) << "not a recursive acquire of garbage";
  EXPECT_EQ(a->rlock.depth(), 1u);
  a->rlock.mark_consistent();
  a->rlock.unlock();
  EXPECT_EQ(a->rlock.debug_word(), 0u);
}
