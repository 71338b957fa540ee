// lock_uncontended: one lock+unlock of a lock in shared memory (a MAP_SHARED anonymous mapping),
// one process, no contention. Variants: shmkit_lock, shmkit_rlock, pthread_robust
// (PTHREAD_PROCESS_SHARED + PTHREAD_MUTEX_ROBUST), boost_mutex (interprocess_mutex) and cas_limit
// (one CAS 0->1 + one exchange ->0 on a shared word: the physical limit of any lock that takes and
// gives up ownership with one atomic instruction each). Goal: shmkit_lock <= 1.3 x cas_limit.
#include <benchmark/benchmark.h>
#include <pthread.h>
#include <sys/mman.h>

#include <atomic>
#include <boost/interprocess/sync/interprocess_mutex.hpp>
#include <cstdint>
#include <new>

#include "shmkit/locks/lock.hpp"
#include "shmkit/sys/syscall.hpp"

namespace {

// A page of MAP_SHARED anonymous memory holding one T, like a lock in a segment.
template <class T>
class SharedPage {
 public:
  SharedPage() {
    if (shmkit::sys::mmap(&mem_, nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1,
                          0) < 0)
      mem_ = nullptr;
  }
  ~SharedPage() {
    if (mem_ != nullptr) (void)shmkit::sys::munmap(mem_, 4096);
  }
  SharedPage(const SharedPage&) = delete;
  SharedPage& operator=(const SharedPage&) = delete;
  void* get() const { return mem_; }

 private:
  void* mem_ = nullptr;
};

template <class L>
void bm_shmkit(benchmark::State& state) {
  SharedPage<L> page;
  if (page.get() == nullptr) return state.SkipWithError("mmap failed");
  auto* lock = new (page.get()) L();
  for (auto _ : state) {
    if (lock->acquire() != shmkit::LockResult::acquired) return state.SkipWithError("acquire failed");
    lock->unlock();
  }
  lock->~L();
}

void bm_pthread_robust(benchmark::State& state) {
  SharedPage<pthread_mutex_t> page;
  if (page.get() == nullptr) return state.SkipWithError("mmap failed");
  auto* m = static_cast<pthread_mutex_t*>(page.get());
  pthread_mutexattr_t attr;
  pthread_mutexattr_init(&attr);
  pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
  pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST);
  pthread_mutex_init(m, &attr);
  pthread_mutexattr_destroy(&attr);
  for (auto _ : state) {
    if (pthread_mutex_lock(m) != 0) return state.SkipWithError("pthread_mutex_lock failed");
    pthread_mutex_unlock(m);
  }
  pthread_mutex_destroy(m);
}

void bm_boost_mutex(benchmark::State& state) {
  using boost::interprocess::interprocess_mutex;
  SharedPage<interprocess_mutex> page;
  if (page.get() == nullptr) return state.SkipWithError("mmap failed");
  auto* m = new (page.get()) interprocess_mutex();
  for (auto _ : state) {
    m->lock();
    m->unlock();
  }
  m->~interprocess_mutex();
}

void bm_cas_limit(benchmark::State& state) {
  SharedPage<std::atomic<std::uint32_t>> page;
  if (page.get() == nullptr) return state.SkipWithError("mmap failed");
  auto* w = new (page.get()) std::atomic<std::uint32_t>(0);
  for (auto _ : state) {
    std::uint32_t expected = 0;
    // acquire/release: the orders a lock needs; on x86 both are locked instructions anyway.
    if (!w->compare_exchange_strong(expected, 1, std::memory_order_acquire, std::memory_order_relaxed))
      return state.SkipWithError("cas failed");
    w->exchange(0, std::memory_order_release);
  }
}

}  // namespace

BENCHMARK_TEMPLATE(bm_shmkit, shmkit::Lock)->Name("lock_uncontended/shmkit_lock");
BENCHMARK_TEMPLATE(bm_shmkit, shmkit::RLock)->Name("lock_uncontended/shmkit_rlock");
BENCHMARK(bm_pthread_robust)->Name("lock_uncontended/pthread_robust");
BENCHMARK(bm_boost_mutex)->Name("lock_uncontended/boost_mutex");
BENCHMARK(bm_cas_limit)->Name("lock_uncontended/cas_limit");
