// Tests the fork-based WorkerPool (channels/pool.hpp): tasks run in worker processes and their
// results come back; handler errors, throws and unknown ids fail their task only; a worker that
// dies fails its task or has it retried once, as the submitter chose, and is replaced; the heap
// blocks a dead worker owned are reclaimed (through the pool's on_worker_death callback); a lock a dead worker held is recovered by the next
// user (owner_died); workers SIGKILLed at random while hundreds of tasks
// run leave every task accounted for; graceful shutdown leaves no process; and when the parent is
// SIGKILLed its workers notice and exit.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mman.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <random>
#include <thread>
#include <vector>

#include "shmkit/heap/heap.hpp"
#include "shmkit/locks/lock.hpp"
#include "shmkit/shm/segment.hpp"
#include "shmkit/sys/proc_control.hpp"
#include "shmkit/sys/syscall.hpp"
#include "shmkit/channels/pool.hpp"
#include "testing.hpp"

using namespace shmkit;
using namespace shmkit::transport;
using namespace std::chrono_literals;
using shmkit::testing::Child;

namespace {

constexpr wire::MsgId kHash = 20, kFail = 21, kThrow = 22, kDie = 23, kDieOnce = 24, kSlowHash = 25,
                      kLockDie = 26, kLockUse = 27;

// A robust lock in shared memory (mapped before the pool forks), for the lock-recovery test.
Lock* shared_lock() {
  static Lock* l = [] {
    void* p = nullptr;
    if (sys::mmap(&p, nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0) != 0) std::abort();
    return new (p) Lock;
  }();
  return l;
}

std::uint64_t fnv1a(std::span<const std::byte> b) {
  std::uint64_t h = 1469598103934665603ULL;
  for (std::byte c : b) h = (h ^ std::to_integer<std::uint8_t>(c)) * 1099511628211ULL;
  return h;
}

// Result = FNV-1a of the payload, repeated `rounds` times (to make tasks take a little while).
int hash_task(const TaskContext&, std::span<const std::byte> in, std::span<std::byte> out, std::size_t& n) {
  std::uint64_t h = 0;
  for (int r = 0; r < 20; ++r) h ^= fnv1a(in) + static_cast<std::uint64_t>(r);
  std::memcpy(out.data(), &h, 8);
  n = 8;
  return 0;
}
std::uint64_t expected_hash(std::span<const std::byte> in) {
  std::uint64_t h = 0;
  for (int r = 0; r < 20; ++r) h ^= fnv1a(in) + static_cast<std::uint64_t>(r);
  return h;
}

// `heap` (optional): the heap kDie takes an owned block from before it dies.
std::map<wire::MsgId, TaskFn> handlers(Heap* heap = nullptr) {
  std::map<wire::MsgId, TaskFn> h;
  h[kHash] = hash_task;
  // The same result, computed 15 times over (a few hundred microseconds): long enough to be killed in.
  h[kSlowHash] = [](const TaskContext& c, std::span<const std::byte> in, std::span<std::byte> out, std::size_t& n) {
    for (int i = 0; i < 14; ++i) (void)hash_task(c, in, out, n);
    return hash_task(c, in, out, n);
  };
  // Dies holding the shared lock.
  h[kLockDie] = [](const TaskContext&, std::span<const std::byte>, std::span<std::byte>, std::size_t&) {
    if (shared_lock()->acquire() != LockResult::acquired) return EDEADLK;
    (void)sys::kill(sys::getpid(), SIGKILL);
    return 0;
  };
  // Takes the shared lock; result byte 1 when it had to recover it from a dead owner.
  h[kLockUse] = [](const TaskContext&, std::span<const std::byte>, std::span<std::byte> out, std::size_t& n) {
    LockResult r = shared_lock()->acquire(sys::Clock::now() + std::chrono::seconds(5));
    if (r != LockResult::acquired && r != LockResult::owner_died) return ETIMEDOUT;
    if (r == LockResult::owner_died) shared_lock()->mark_consistent();  // nothing to repair here
    shared_lock()->unlock();
    out[0] = std::byte{r == LockResult::owner_died};
    n = 1;
    return 0;
  };
  h[kFail] = [](const TaskContext&, std::span<const std::byte>, std::span<std::byte>, std::size_t&) { return ERANGE; };
  h[kThrow] = [](const TaskContext&, std::span<const std::byte>, std::span<std::byte>, std::size_t&) -> int {
    throw std::runtime_error("handler threw");
  };
  // Takes an owned heap block, then dies holding it (always, or on the first attempt only).
  h[kDie] = [heap](const TaskContext&, std::span<const std::byte>, std::span<std::byte>, std::size_t&) {
    if (heap != nullptr) (void)heap->allocate_owned(4000);
    (void)sys::kill(sys::getpid(), SIGKILL);
    return 0;
  };
  h[kDieOnce] = [](const TaskContext& c, std::span<const std::byte> in, std::span<std::byte> out, std::size_t& n) {
    if (c.attempt == 1) (void)sys::kill(sys::getpid(), SIGKILL);
    return hash_task(c, in, out, n);
  };
  return h;
}

bool gone(pid_t pid) { return sys::kill(pid, 0) == -ESRCH; }

TEST(PoolWorkers, ResultsErrorsAndGracefulShutdown) {
  std::vector<pid_t> pids;
  {
    WorkerPool pool({.workers = 3, .max_tasks = 64, .max_payload = 4096, .max_result = 64}, handlers());
    pids = pool.worker_pids();
    ASSERT_EQ(pids.size(), 3u);
    std::vector<std::pair<TaskHandle, std::vector<std::byte>>> tasks;
    for (int i = 0; i < 60; ++i) {
      std::vector<std::byte> p(static_cast<std::size_t>(i * 50));
      for (std::size_t k = 0; k < p.size(); ++k) p[k] = static_cast<std::byte>(k * i);
      TaskHandle h = pool.submit(kHash, p);
      ASSERT_TRUE(h.valid());
      tasks.emplace_back(h, std::move(p));
    }
    for (auto& [h, p] : tasks) {
      TaskResult r = pool.wait(h, sys::Clock::now() + 10s);
      ASSERT_EQ(r.status, TaskStatus::done);
      ASSERT_EQ(r.result.size(), 8u);
      std::uint64_t got;
      std::memcpy(&got, r.result.data(), 8);
      EXPECT_EQ(got, expected_hash(p));
      EXPECT_EQ(r.attempts, 1u);
      EXPECT_EQ(pool.wait(h).status, TaskStatus::invalid) << "a handle is waited for once";
    }
    TaskResult r = pool.wait(pool.submit(kFail, {}), sys::Clock::now() + 10s);
    EXPECT_EQ(r.status, TaskStatus::failed);
    EXPECT_EQ(r.error, ERANGE);
    r = pool.wait(pool.submit(kThrow, {}), sys::Clock::now() + 10s);
    EXPECT_EQ(r.status, TaskStatus::failed);
    EXPECT_EQ(r.error, EIO);
    r = pool.wait(pool.submit(999, {}), sys::Clock::now() + 10s);
    EXPECT_EQ(r.status, TaskStatus::failed);
    EXPECT_EQ(r.error, EOPNOTSUPP);
    std::vector<std::byte> big(4097);
    EXPECT_THROW((void)pool.submit(kHash, big), Error);
    EXPECT_EQ(pool.stats().worker_deaths, 0u);
    // A full table gives invalid handles instead of blocking.
    std::vector<TaskHandle> many;
    for (int i = 0; i < 70; ++i) many.push_back(pool.submit(kHash, {}));
    EXPECT_FALSE(many.back().valid());
    for (auto& h : many)
      if (h.valid()) {
        EXPECT_EQ(pool.wait(h, sys::Clock::now() + 10s).status, TaskStatus::done);
      }
  }  // ~WorkerPool: graceful shutdown
  for (pid_t p : pids) EXPECT_TRUE(gone(p)) << "worker " << p << " left behind";
}

TEST(PoolWorkers, WorkerDeathFailsOrRetriesAndReclaimsHeapBlocks) {
  Segment seg = Segment::create_anonymous(32 << 20);
  Heap& heap = Heap::attach(seg);
  std::vector<pid_t> first;
  {
    // The pool knows nothing of heaps: it reaches this one through its death callback.
    WorkerPool pool({.workers = 2,
                     .max_tasks = 16,
                     .max_payload = 256,
                     .max_result = 64,
                     .on_worker_death = [&heap](pid_t) { return std::uint64_t{heap.reclaim_dead()}; }},
                    handlers(&heap));
    first = pool.worker_pids();
    TaskResult r = pool.wait(pool.submit(kDie, {}, TaskPolicy::fail_on_worker_death), sys::Clock::now() + 10s);
    EXPECT_EQ(r.status, TaskStatus::worker_died);
    EXPECT_EQ(r.attempts, 1u);
    r = pool.wait(pool.submit(kDie, {}, TaskPolicy::retry_once), sys::Clock::now() + 10s);
    EXPECT_EQ(r.status, TaskStatus::worker_died);
    EXPECT_EQ(r.attempts, 2u) << "retried once, then reported";
    std::byte data[100]{};
    r = pool.wait(pool.submit(kDieOnce, data, TaskPolicy::retry_once), sys::Clock::now() + 10s);
    ASSERT_EQ(r.status, TaskStatus::done);
    EXPECT_EQ(r.attempts, 2u);
    std::uint64_t got;
    std::memcpy(&got, r.result.data(), 8);
    EXPECT_EQ(got, expected_hash(data));
    // Replaced workers still serve.
    r = pool.wait(pool.submit(kHash, data), sys::Clock::now() + 10s);
    EXPECT_EQ(r.status, TaskStatus::done);
    EXPECT_EQ(pool.stats().worker_deaths, 4u);
    EXPECT_EQ(pool.stats().respawns, 4u);
    EXPECT_GE(pool.stats().reclaimed, 3u) << "the dead workers' owned blocks";
    EXPECT_EQ(heap.stats().bytes_owned, 0u);
    EXPECT_TRUE(heap.verify().empty());
  }
  for (pid_t p : first) EXPECT_TRUE(gone(p));
  Heap::detach(seg);  // before the segment closes: the heap keeps per-thread caches in it
}

TEST(PoolWorkers, LockHeldByADeadWorkerIsRecovered) {
  (void)shared_lock();  // mapped before the fork, so every worker shares it
  WorkerPool pool({.workers = 2, .max_tasks = 8, .max_payload = 64, .max_result = 64}, handlers());
  TaskResult r = pool.wait(pool.submit(kLockDie, {}), sys::Clock::now() + 10s);
  EXPECT_EQ(r.status, TaskStatus::worker_died);
  r = pool.wait(pool.submit(kLockUse, {}), sys::Clock::now() + 10s);
  ASSERT_EQ(r.status, TaskStatus::done);
  EXPECT_EQ(r.result.at(0), std::byte{1}) << "the next user learns the owner died and repairs";
  r = pool.wait(pool.submit(kLockUse, {}), sys::Clock::now() + 10s);
  ASSERT_EQ(r.status, TaskStatus::done);
  EXPECT_EQ(r.result.at(0), std::byte{0}) << "consistent again";
}

// Under AddressSanitizer (a -O0 build) hashing runs about 10x slower; smaller payloads keep each
// task a few milliseconds long, so tasks still finish between kills and the test within its bound.
#if defined(__SANITIZE_ADDRESS__)
constexpr std::size_t kPayloadDivisor = 10;
#else
constexpr std::size_t kPayloadDivisor = 1;
#endif

TEST(PoolWorkers, RandomKillsLeaveEveryTaskAccountedFor) {
  constexpr int kTasks = 400;
  WorkerPool pool({.workers = 3, .max_tasks = kTasks, .max_payload = 8192, .max_result = 64}, handlers());
  std::mt19937 rng(4242);
  std::vector<TaskHandle> handles;
  std::vector<std::vector<std::byte>> payloads;
  std::vector<TaskPolicy> policies;
  for (int i = 0; i < kTasks; ++i) {
    std::vector<std::byte> p((2000 + rng() % 6000) / kPayloadDivisor);
    for (auto& b : p) b = static_cast<std::byte>(rng());
    policies.push_back(i % 2 ? TaskPolicy::retry_once : TaskPolicy::fail_on_worker_death);
    handles.push_back(pool.submit(kSlowHash, p, policies.back()));
    ASSERT_TRUE(handles.back().valid());
    payloads.push_back(std::move(p));
  }
  int kills = 0, done = 0, died = 0, retried_done = 0;
  std::vector<bool> finished(kTasks, false);
  auto end = sys::Clock::now() + 15s;
  int left = kTasks;
  while (left > 0 && sys::Clock::now() < end) {
    // Kill a random worker every few milliseconds while tasks run.
    auto pids = pool.worker_pids();
    if (rng() % 4 == 0 && sys::kill(pids[rng() % pids.size()], SIGKILL) == 0) ++kills;
    int collected = 0;
    for (int i = 0; i < kTasks && collected < 4; ++i) {
      if (finished[i]) continue;
      TaskResult r = pool.wait(handles[i], sys::Clock::now() + 2ms);
      if (r.status == TaskStatus::timed_out) break;  // kill again, then come back
      ++collected;
      finished[i] = true;
      --left;
      if (r.status == TaskStatus::done) {
        ++done;
        retried_done += r.attempts == 2;
        std::uint64_t got;
        ASSERT_EQ(r.result.size(), 8u);
        std::memcpy(&got, r.result.data(), 8);
        ASSERT_EQ(got, expected_hash(payloads[i])) << "task " << i;
      } else {
        ASSERT_EQ(r.status, TaskStatus::worker_died) << "task " << i << ": " << to_string(r.status);
        ++died;
        if (policies[i] == TaskPolicy::retry_once) {
          EXPECT_EQ(r.attempts, 2u);
        }
      }
    }
  }
  EXPECT_EQ(left, 0) << "tasks still pending after 15 s";
  EXPECT_EQ(done + died, kTasks);
  EXPECT_GE(kills, 20);
  EXPECT_GT(done, kTasks / 4);
  EXPECT_GE(pool.stats().worker_deaths, 1u);
  std::printf("pool kills: %d kills sent, %llu deaths seen, %d done (%d after a retry), %d worker_died\n", kills,
              static_cast<unsigned long long>(pool.stats().worker_deaths), done, retried_done, died);
  auto pids = pool.worker_pids();
  pool.shutdown();
  for (pid_t p : pids) EXPECT_TRUE(gone(p));
}

TEST(PoolWorkers, WorkersExitWhenTheParentIsKilled) {
  // Become the subreaper so the orphaned workers are re-parented to us and can be reaped here.
  ASSERT_EQ(sys::set_child_subreaper(true), 0);
  void* mem = nullptr;
  ASSERT_EQ(sys::mmap(&mem, nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0), 0);
  auto* shared = static_cast<std::atomic<pid_t>*>(mem);
  Child parent([shared] {
    WorkerPool pool({.workers = 2, .max_tasks = 4, .max_payload = 64, .max_result = 64}, handlers());
    auto pids = pool.worker_pids();
    shared[1].store(pids[0]);
    shared[2].store(pids[1]);
    shared[0].store(1);
    for (;;) std::this_thread::sleep_for(1s);
    return 0;
  });
  auto until = sys::Clock::now() + 5s;
  while (shared[0].load() == 0 && sys::Clock::now() < until) std::this_thread::sleep_for(1ms);
  ASSERT_EQ(shared[0].load(), 1);
  pid_t w0 = shared[1].load(), w1 = shared[2].load();
  parent.kill(SIGKILL);
  EXPECT_EQ(parent.wait(5s), -SIGKILL);
  // The workers die with their parent (PR_SET_PDEATHSIG): reap them as their new parent.
  for (pid_t w : {w0, w1}) {
    int st = 0;
    pid_t r = 0;
    auto deadline = sys::Clock::now() + 2s;
    while ((r = sys::waitpid(w, &st, WNOHANG)) == 0 && sys::Clock::now() < deadline)
      std::this_thread::sleep_for(1ms);
    EXPECT_EQ(r, w) << "worker " << w << " outlived its parent";
    if (r == 0) {
      (void)sys::kill(w, SIGKILL);
      (void)sys::waitpid(w, &st, 0);
    }
  }
  (void)sys::set_child_subreaper(false);
  (void)sys::munmap(mem, 4096);
}

}  // namespace
