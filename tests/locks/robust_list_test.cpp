// Sharing glibc's per-thread robust list: shmkit's chain hangs behind a private anchor in the same
// list as glibc's robust pthread mutexes (including PI ones, whose entries carry bit 0). Locking and
// unlocking them interleaved in any order keeps the list well formed (walked as the kernel walks
// it after every step), in both layouts (lock.hpp, THE CHAIN), and when the process is killed
// holding a mix of both, the kernel marks every one of them: glibc's report EOWNERDEAD, shmkit's
// report owner_died.
#include <gtest/gtest.h>
#include <pthread.h>

#include <algorithm>
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

// Walks this thread's robust list as the kernel does (from the head along `next`, until the head or
// a self-loop), returns the futex word addresses in walk order, leaving out shmkit's two private
// anchors (lock.hpp, THE CHAIN), and checks that every glibc entry's prev points at its
// predecessor (glibc's own unlink relies on it; shmkit entries keep no prev).
std::vector<std::uintptr_t> walk(const std::vector<std::uintptr_t>& glibc_words, bool* well_formed) {
  auto& ts = locks_detail::thread_state();
  auto* head = ts.head;
  const auto anchor = reinterpret_cast<std::uintptr_t>(&ts.anchor.next);
  const auto tail = reinterpret_cast<std::uintptr_t>(&ts.tail.next);
  std::vector<std::uintptr_t> words;
  *well_formed = true;
  std::uintptr_t prev_entry = reinterpret_cast<std::uintptr_t>(head);
  std::uintptr_t entry = strip(head->list);
  for (int steps = 0; entry != reinterpret_cast<std::uintptr_t>(head); ++steps) {
    if (steps > 64) {
      *well_formed = false;
      break;
    }
    const auto word = static_cast<std::uintptr_t>(static_cast<std::intptr_t>(entry) + head->futex_offset);
    const bool is_glibc = std::find(glibc_words.begin(), glibc_words.end(), word) != glibc_words.end();
    if (is_glibc && strip(*reinterpret_cast<void**>(entry - sizeof(void*))) != prev_entry) *well_formed = false;
    if (entry != anchor && entry != tail) words.push_back(word);
    const std::uintptr_t next = strip(*reinterpret_cast<void**>(entry));
    if (next == entry) break;  // shmkit's chain ends in a self-loop
    prev_entry = entry;
    entry = next;
  }
  return words;
}

std::uintptr_t addr(const void* p) { return reinterpret_cast<std::uintptr_t>(p); }

// Waits until the child holds its final set of locks (stage 1), then SIGKILLs it.
void kill_when_holding(Arena& s, Child& child) {
  ASSERT_TRUE(eventually([&] { return s.stage.load() != 0; }))
      << "the child failed at step (exit code) " << child.wait(1s);
  child.kill(SIGKILL);
  ASSERT_EQ(child.wait(5s), -SIGKILL);
}

// The kernel marked the dead holder's lock: the next locker is told, repairs and releases it.
void expect_owner_dead(pthread_mutex_t* m) {
  EXPECT_EQ(pthread_mutex_lock(m), EOWNERDEAD);
  pthread_mutex_consistent(m);
  pthread_mutex_unlock(m);
}
template <class L>
void expect_owner_dead(L& l) {
  EXPECT_EQ(l.acquire(), LockResult::owner_died);
  l.mark_consistent();
  l.unlock();
}

}  // namespace

TEST(LocksRobustList, InterleavedWithGlibcRobustMutexesStaysWellFormed) {
  Shared<Arena> s;
  init_robust(&s->g1, false);
  init_robust(&s->g2, false);
  init_robust(&s->gpi, true);
  const std::vector<std::uintptr_t> glibc = {addr(&s->g1), addr(&s->g2), addr(&s->gpi)};
  Child child([&] {
    bool ok = false;
    // The first call links shmkit's anchor into the (empty) list: the usual, self-loop layout.
    if (!walk(glibc, &ok).empty() || !ok) return 1;  // glibc reset the list in this fork child
    auto expect = [&](std::vector<std::uintptr_t> want) {
      std::vector<std::uintptr_t> got = walk(glibc, &ok);
      return ok && got == want;
    };
    if (pthread_mutex_lock(&s->g1) != 0) return 2;
    if (s->a.acquire() != LockResult::acquired) return 2;
    if (pthread_mutex_lock(&s->gpi) != 0) return 2;
    if (s->r.acquire() != LockResult::acquired || s->r.acquire() != LockResult::acquired) return 2;
    if (pthread_mutex_lock(&s->g2) != 0) return 2;
    if (s->b.acquire() != LockResult::acquired) return 2;
    // glibc's entries newest first (in front of the anchor), then shmkit's newest first.
    if (!expect({addr(&s->g2), addr(&s->gpi), addr(&s->g1), addr(&s->b), addr(&s->r), addr(&s->a)})) return 3;
    s->a.unlock();  // shmkit's oldest: a store into r's link
    if (!expect({addr(&s->g2), addr(&s->gpi), addr(&s->g1), addr(&s->b), addr(&s->r)})) return 4;
    pthread_mutex_unlock(&s->g2);  // glibc unlinks its first entry
    if (!expect({addr(&s->gpi), addr(&s->g1), addr(&s->b), addr(&s->r)})) return 5;
    s->r.unlock();  // depth 2 -> 1: stays linked
    if (!expect({addr(&s->gpi), addr(&s->g1), addr(&s->b), addr(&s->r)})) return 6;
    pthread_mutex_unlock(&s->g1);  // glibc unlinks the entry right before shmkit's anchor
    if (!expect({addr(&s->gpi), addr(&s->b), addr(&s->r)})) return 7;
    if (s->a.acquire() != LockResult::acquired) return 8;
    if (!expect({addr(&s->gpi), addr(&s->a), addr(&s->b), addr(&s->r)})) return 9;
    s->b.unlock();  // from the middle of shmkit's chain
    if (!expect({addr(&s->gpi), addr(&s->a), addr(&s->r)})) return 10;
    s->r.unlock();
    pthread_mutex_unlock(&s->gpi);
    s->a.unlock();
    if (!expect({})) return 11;
    // Now die holding a mix of both kinds.
    if (pthread_mutex_lock(&s->gpi) != 0 || s->a.acquire() != LockResult::acquired ||
        pthread_mutex_lock(&s->g1) != 0 || s->r.acquire() != LockResult::acquired)
      return 12;
    s->stage.store(1);
    sleep_until_killed();
  });
  kill_when_holding(*s, child);
  expect_owner_dead(&s->g1);
  expect_owner_dead(&s->gpi);
  expect_owner_dead(s->a);
  expect_owner_dead(s->r);
  EXPECT_EQ(s->b.try_acquire(), LockResult::acquired) << "b was released before the death";
  s->b.unlock();
  bool ok = false;
  EXPECT_TRUE(walk(glibc, &ok).empty());
  EXPECT_TRUE(ok);
  pthread_mutex_destroy(&s->g1);
  pthread_mutex_destroy(&s->g2);
  pthread_mutex_destroy(&s->gpi);
}

// The second layout: the thread already holds a glibc robust mutex at its first shmkit operation,
// so shmkit's chain sits between two private anchors and that mutex stays reachable behind it.
TEST(LocksRobustList, AGlibcMutexHeldBeforeTheFirstShmkitLockStaysReachable) {
  Shared<Arena> s;
  init_robust(&s->g1, false);
  init_robust(&s->g2, false);
  const std::vector<std::uintptr_t> glibc = {addr(&s->g1), addr(&s->g2)};
  Child child([&] {
    if (pthread_mutex_lock(&s->g1) != 0) return 1;  // before any shmkit call in this process
    if (s->a.acquire() != LockResult::acquired) return 2;
    if (pthread_mutex_lock(&s->g2) != 0 || s->b.acquire() != LockResult::acquired) return 2;
    bool ok = false;
    auto expect = [&](std::vector<std::uintptr_t> want) { return walk(glibc, &ok) == want && ok; };
    if (!expect({addr(&s->g2), addr(&s->b), addr(&s->a), addr(&s->g1)})) return 3;
    pthread_mutex_unlock(&s->g1);  // glibc unlinks the entry behind shmkit's tail anchor
    if (!expect({addr(&s->g2), addr(&s->b), addr(&s->a)})) return 4;
    if (pthread_mutex_lock(&s->g1) != 0) return 5;
    if (!expect({addr(&s->g1), addr(&s->g2), addr(&s->b), addr(&s->a)})) return 6;
    s->stage.store(1);
    sleep_until_killed();
  });
  kill_when_holding(*s, child);
  expect_owner_dead(&s->g1);
  expect_owner_dead(&s->g2);
  expect_owner_dead(s->a);
  expect_owner_dead(s->b);
  pthread_mutex_destroy(&s->g1);
  pthread_mutex_destroy(&s->g2);
}
