// lock_contended_2proc: two forked processes each increment one shared counter under one lock in
// a MAP_SHARED mapping; time per increment (all increments of both processes / wall time); the
// counter is checked at the end. Variants: shmkit_lock, pthread_robust (PTHREAD_PROCESS_SHARED +
// PTHREAD_MUTEX_ROBUST), boost_mutex (interprocess_mutex). Goal: shmkit_lock <= 0.8 x boost_mutex.
//
// One benchmark run of n iterations = n increments: the partner (forked before the timed region,
// waiting on a start flag) does n/2, this process does the rest, and the timed region ends when
// both are done, so the reported time per iteration is wall time per increment.
#include <benchmark/benchmark.h>
#include <pthread.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <boost/interprocess/sync/interprocess_mutex.hpp>
#include <cstdint>
#include <new>

#include "cpu_load.hpp"
#include "shmkit/locks/lock.hpp"
#include "shmkit/sys/syscall.hpp"

namespace {

struct RobustPthreadMutex {
  pthread_mutex_t m;
  RobustPthreadMutex() {
    pthread_mutexattr_t attr;
    pthread_mutexattr_init(&attr);
    pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
    pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST);
    pthread_mutex_init(&m, &attr);
    pthread_mutexattr_destroy(&attr);
  }
  ~RobustPthreadMutex() { pthread_mutex_destroy(&m); }
  void lock() { pthread_mutex_lock(&m); }
  void unlock() { pthread_mutex_unlock(&m); }
};

struct ShmkitLock {
  shmkit::Lock l;
  void lock() { (void)l.acquire(); }
  void unlock() { l.unlock(); }
};

template <class M>
struct Arena {
  M mutex;
  alignas(64) std::int64_t counter = 0;  // protected by mutex; own cache line, like real data
  alignas(64) std::atomic<int> start{0};  // 1 = go
  std::atomic<int> partner_ready{0};
};

template <class M>
void increment(Arena<M>& a, std::int64_t n) {
  for (std::int64_t i = 0; i < n; ++i) {
    a.mutex.lock();
    a.counter = a.counter + 1;
    a.mutex.unlock();
  }
}

template <class M>
void bm_contended(benchmark::State& state) {
  void* mem = nullptr;
  if (shmkit::sys::mmap(&mem, nullptr, sizeof(Arena<M>), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
                        -1, 0) < 0)
    return state.SkipWithError("mmap failed");
  auto* a = new (mem) Arena<M>();
  const std::int64_t n = static_cast<std::int64_t>(state.max_iterations);
  const std::int64_t partner_n = n / 2;
  const pid_t pid = ::fork();
  if (pid < 0) return state.SkipWithError("fork failed");
  if (pid == 0) {
    a->partner_ready.store(1, std::memory_order_release);
    while (a->start.load(std::memory_order_acquire) == 0) shmkit::locks_detail::cpu_relax();
    increment(*a, partner_n);
    ::_exit(0);
  }
  while (a->partner_ready.load(std::memory_order_acquire) == 0) shmkit::locks_detail::cpu_relax();
  int status = -1;
  while (state.KeepRunningBatch(n)) {
    a->start.store(1, std::memory_order_release);
    increment(*a, n - partner_n);
    while (::waitpid(pid, &status, 0) < 0) {
    }
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
    state.SkipWithError("partner process failed");
  else if (a->counter != n)
    state.SkipWithError("counter mismatch: mutual exclusion broken");
  a->~Arena<M>();
  (void)shmkit::sys::munmap(mem, sizeof(Arena<M>));
}

}  // namespace

SHMKIT_TWO_PROCESS_BENCHMARK(bm_contended<ShmkitLock>, "lock_contended_2proc/shmkit_lock");
SHMKIT_TWO_PROCESS_BENCHMARK(bm_contended<RobustPthreadMutex>, "lock_contended_2proc/pthread_robust");
SHMKIT_TWO_PROCESS_BENCHMARK(bm_contended<boost::interprocess::interprocess_mutex>, "lock_contended_2proc/boost_mutex");
