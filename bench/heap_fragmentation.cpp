// heap_fragmentation: a fixed mixed workload; counter footprint_ratio = bytes of the segment the
// heap touched at its high-water mark / peak live bytes (1.0 would be a perfect heap). Measured the
// same way for every variant: the highest end address of any block handed out, minus the segment
// base (so the heap's own headers and control structures count against it).
//
// The workload (deterministic, seed 99), one iteration = all of it, in a fresh arena:
//   5 cycles; in cycle c:
//     grow:   allocate until 12 MiB + 2 MiB * c are live; sizes log-uniform in [16 B, 64 KiB]
//             (so most blocks are small but most bytes are in large blocks); cycles 1 and 3 use a
//             small-heavy mix instead (80% of blocks 16..256 B, 20% log-uniform up to 64 KiB);
//     shrink: free random live blocks until 3 MiB are live (a fragmenting, non-LIFO order);
//     churn:  20,000 random free/allocate pairs at that level.
//   At the end everything is freed.
// Variants: shmkit, boost_rbtree (managed_shared_memory's default allocator). Goal: shmkit <= boost.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "heap_bench_common.hpp"

namespace {

struct Live {
  void* p;
  std::size_t n;
};

template <class Arena>
void fragmentation(benchmark::State& state) {
  double ratio = 0;
  for (auto _ : state) {
    Arena arena(std::size_t{1} << 30);
    heap_bench::Rng rng(99);
    std::vector<Live> live;
    std::size_t live_bytes = 0, peak_live = 0, touched = 0;
    const std::byte* base = arena.base();
    auto size_for = [&](int cycle) -> std::size_t {
      if ((cycle == 1 || cycle == 3) && rng() % 10 < 8) return 16 + rng() % 241;
      double u = static_cast<double>(rng() % 1000000) / 1000000.0;
      return static_cast<std::size_t>(std::exp(std::log(16.0) + u * (std::log(65536.0) - std::log(16.0))));
    };
    auto alloc = [&](std::size_t n) {
      void* p = arena.allocate(n);
      if (p == nullptr) return false;
      live.push_back({p, n});
      live_bytes += n;
      peak_live = std::max(peak_live, live_bytes);
      touched = std::max<std::size_t>(touched, static_cast<std::size_t>(static_cast<const std::byte*>(p) - base) + n);
      return true;
    };
    auto free_random = [&] {
      std::size_t i = rng() % live.size();
      arena.deallocate(live[i].p);
      live_bytes -= live[i].n;
      live[i] = live.back();
      live.pop_back();
    };
    bool ok = true;
    for (int cycle = 0; cycle < 5 && ok; ++cycle) {
      const std::size_t target = (std::size_t{12} << 20) + (std::size_t{2} << 20) * static_cast<std::size_t>(cycle);
      while (ok && live_bytes < target) ok = alloc(size_for(cycle));
      while (!live.empty() && live_bytes > (std::size_t{3} << 20)) free_random();
      for (int i = 0; i < 20000 && ok; ++i) {
        if (!live.empty()) free_random();
        ok = alloc(size_for(cycle));
      }
    }
    for (auto& l : live) arena.deallocate(l.p);
    if (!ok) return state.SkipWithError("out of memory");
    ratio = static_cast<double>(touched) / static_cast<double>(peak_live);
  }
  state.counters["footprint_ratio"] = ratio;
}

BENCHMARK(fragmentation<heap_bench::ShmkitArena>)->Name("heap_fragmentation/shmkit")->Iterations(3)->Unit(benchmark::kMillisecond);
BENCHMARK(fragmentation<heap_bench::BoostArena>)->Name("heap_fragmentation/boost_rbtree")->Iterations(3)->Unit(benchmark::kMillisecond);

}  // namespace
