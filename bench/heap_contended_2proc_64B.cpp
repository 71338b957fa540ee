// heap_contended_2proc_64B: two forked processes allocate and free 64-byte blocks on the same heap
// at the same time; time per allocate+free pair (all pairs of both processes / wall time). Each
// process keeps its last 32 blocks live (a ring: allocate into slot i % 32, freeing what was there),
// so frees are not simply of the block just allocated.
// Variants: shmkit (per-thread caches in the segment + per-class locks), boost_rbtree
// (managed_shared_memory's default allocator, one mutex). Goal: shmkit <= 0.25 x boost_rbtree.
//
// One benchmark run of n iterations = n pairs: the partner (forked before the timed region,
// waiting on a start flag) does n/2, this process does the rest; the timed region ends when both
// are done.
#include <benchmark/benchmark.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <new>

#include "cpu_load.hpp"
#include "heap_bench_common.hpp"
#include "shmkit/sys/syscall.hpp"

namespace {

struct Flags {
  alignas(64) std::atomic<int> start{0};
  std::atomic<int> partner_ready{0};
  std::atomic<int> partner_failed{0};
};

template <class Arena>
bool pairs(Arena& arena, std::int64_t n) {
  void* ring[32] = {};
  for (std::int64_t i = 0; i < n; ++i) {
    void*& s = ring[i % 32];
    if (s != nullptr) arena.deallocate(s);
    s = arena.allocate(64);
    if (s == nullptr) return false;
    static_cast<char*>(s)[0] = 1;
  }
  for (void* p : ring)
    if (p != nullptr) arena.deallocate(p);
  return true;
}

template <class Arena>
void contended(benchmark::State& state) {
  void* mem = nullptr;
  if (shmkit::sys::mmap(&mem, nullptr, sizeof(Flags), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0) < 0)
    return state.SkipWithError("mmap failed");
  auto* f = new (mem) Flags();
  Arena arena(std::size_t{64} << 20);
  const auto n = static_cast<std::int64_t>(state.max_iterations);
  const std::int64_t partner_n = n / 2;
  const pid_t pid = ::fork();
  if (pid < 0) return state.SkipWithError("fork failed");
  if (pid == 0) {
    f->partner_ready.store(1, std::memory_order_release);
    while (f->start.load(std::memory_order_acquire) == 0) {
    }
    if (!pairs(arena, partner_n)) f->partner_failed.store(1);
    ::_exit(0);
  }
  while (f->partner_ready.load(std::memory_order_acquire) == 0) {
  }
  int status = -1;
  bool ok = true;
  while (state.KeepRunningBatch(n)) {
    f->start.store(1, std::memory_order_release);
    ok = pairs(arena, n - partner_n);
    while (::waitpid(pid, &status, 0) < 0) {
    }
  }
  if (!ok || !WIFEXITED(status) || WEXITSTATUS(status) != 0 || f->partner_failed.load() != 0)
    state.SkipWithError("a process failed to allocate");
  (void)shmkit::sys::munmap(mem, sizeof(Flags));
}

SHMKIT_TWO_PROCESS_BENCHMARK_WITH(contended<heap_bench::ShmkitArena>, "heap_contended_2proc_64B/shmkit",
                                  [](benchmark::internal::Benchmark* b) { b->Iterations(4000000); });
SHMKIT_TWO_PROCESS_BENCHMARK_WITH(contended<heap_bench::BoostArena>, "heap_contended_2proc_64B/boost_rbtree",
                                  [](benchmark::internal::Benchmark* b) { b->Iterations(1000000); });

}  // namespace
