// Sharing glibc's per-thread robust list: shmkit locks are linked into the same list as glibc's
// robust pthread mutexes (including PI ones, whose entries carry bit 0). Locking and unlocking them
// interleaved in any order keeps the list well formed (walked forwards and backwards here, after
// every step), and when the process is killed holding a mix of both, the kernel marks every one of
// them: glibc's report EOWNERDEAD, shmkit's report owner_died.
#include <gtest/gtest.h>
#include <pthread.h>

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <vector>

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
  pthread_mutex_t g1, g2, gpi;
  Lock a, b;
  RLock r;
  std::atomic<int> stage{0};
};

void init_robust(pthread_mutex_t* m, bool pi) {
  pthread_mutexattr_t attr;
  pthread_mutexattr_init(&attr);
  pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
  pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST);
  if (pi) pthread_mutexattr_setprotocol(&attr, PTHREAD_PRIO_INHERIT);
  pthread_mutex_init(m, &attr);
  pthread_mutexattr_destroy(&attr);
}

std::uintptr_t strip(void* p) { return reinterpret_cast<std::uintptr_t>(p) & ~std::uintptr_t{1}; }

// Walks this thread's robust list: returns the futex word addresses in list order, and checks that
// every entry's prev points at its predecessor's `next` (the head for the first entry).
std::vector<std::uintptr_t> walk(bool* well_formed) {
  auto* head = locks_detail::thread_state().head;
  std::vector<std::uintptr_t> words;
  *well_formed = true;
  std::uintptr_t expected_prev = reinterpret_cast<std::uintptr_t>(head);
  std::uintptr_t entry = strip(head->list);
  while (entry != reinterpret_cast<std::uintptr_t>(head)) {
    if (words.size() > 64) {
      *well_formed = false;
      break;
    }
    const auto prev = strip(*reinterpret_cast<void**>(entry - sizeof(void*)));
    if (prev != expected_prev) *well_formed = false;
    words.push_back(static_cast<std::uintptr_t>(static_cast<std::intptr_t>(entry) + head->futex_offset));
    expected_prev = entry;
    entry = strip(*reinterpret_cast<void**>(entry));
  }
  return words;
}

std::uintptr_t addr(const void* p) { return reinterpret_cast<std::uintptr_t>(p); }

}  // namespace

TEST(LocksRobustList, InterleavedWithGlibcRobustMutexesStaysWellFormed) {
  Shared<Arena> s;
  init_robust(&s->g1, false);
  init_robust(&s->g2, false);
  init_robust(&s->gpi, true);
  Child child([&] {
    bool ok = false;
    if (!walk(&ok).empty() || !ok) return 1;  // glibc reset the list in this fork child
    auto expect = [&](std::vector<std::uintptr_t> want) {
      std::vector<std::uintptr_t> got = walk(&ok);
      return ok && got == want;
    };
    if (pthread_mutex_lock(&s->g1) != 0) return 2;
    if (s->a.acquire() != LockResult::acquired) return 2;
    if (pthread_mutex_lock(&s->gpi) != 0) return 2;
    if (s->r.acquire() != LockResult::acquired || s->r.acquire() != LockResult::acquired) return 2;
    if (pthread_mutex_lock(&s->g2) != 0) return 2;
    if (s->b.acquire() != LockResult::acquired) return 2;
    // Newest first.
    if (!expect({addr(&s->b), addr(&s->g2), addr(&s->r), addr(&s->gpi), addr(&s->a), addr(&s->g1)})) return 3;
    s->a.unlock();  // from the middle, next to glibc's PI mutex
    if (!expect({addr(&s->b), addr(&s->g2), addr(&s->r), addr(&s->gpi), addr(&s->g1)})) return 4;
    pthread_mutex_unlock(&s->g2);  // glibc unlinks between two shmkit locks
    if (!expect({addr(&s->b), addr(&s->r), addr(&s->gpi), addr(&s->g1)})) return 5;
    s->r.unlock();  // depth 2 -> 1: stays linked
    if (!expect({addr(&s->b), addr(&s->r), addr(&s->gpi), addr(&s->g1)})) return 6;
    pthread_mutex_unlock(&s->g1);  // the last entry
    if (!expect({addr(&s->b), addr(&s->r), addr(&s->gpi)})) return 7;
    if (s->a.acquire() != LockResult::acquired) return 8;
    if (!expect({addr(&s->a), addr(&s->b), addr(&s->r), addr(&s->gpi)})) return 9;
    s->b.unlock();
    s->r.unlock();
    pthread_mutex_unlock(&s->gpi);
    s->a.unlock();
    if (!expect({})) return 10;
    // Now die holding a mix of both kinds.
    if (pthread_mutex_lock(&s->gpi) != 0 || s->a.acquire() != LockResult::acquired ||
        pthread_mutex_lock(&s->g1) != 0 || s->r.acquire() != LockResult::acquired)
      return 11;
    s->stage.store(1);
    sleep_until_killed();
  });
  ASSERT_TRUE(eventually([&] { return s->stage.load() != 0; }))
      << "the child failed at step (exit code) " << child.wait(1s);
  child.kill(SIGKILL);
  ASSERT_EQ(child.wait(5s), -SIGKILL);
  EXPECT_EQ(pthread_mutex_lock(&s->g1), EOWNERDEAD);
  EXPECT_EQ(pthread_mutex_lock(&s->gpi), EOWNERDEAD);
  EXPECT_EQ(s->a.acquire(), LockResult::owner_died);
  EXPECT_EQ(s->r.acquire(), LockResult::owner_died);
  EXPECT_EQ(s->b.try_acquire(), LockResult::acquired) << "b was released before the death";
  pthread_mutex_consistent(&s->g1);
  pthread_mutex_consistent(&s->gpi);
  pthread_mutex_unlock(&s->g1);
  pthread_mutex_unlock(&s->gpi);
  s->a.mark_consistent();
  s->a.unlock();
  s->r.mark_consistent();
  s->r.unlock();
  s->b.unlock();
  bool ok = false;
  EXPECT_TRUE(walk(&ok).empty());
  EXPECT_TRUE(ok);
  pthread_mutex_destroy(&s->g1);
  pthread_mutex_destroy(&s->g2);
  pthread_mutex_destroy(&s->gpi);
}
