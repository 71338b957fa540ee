// heap_random_live10k: 10,000 slots; each iteration picks a slot at random (fixed seed) and frees
// its block if it holds one, else allocates 16 + rand() % 1009 bytes into it. Time per operation.
// Variants: shmkit (shmkit::Heap in a shared segment), boost_rbtree (managed_shared_memory's
// default allocator), glibc_malloc (the process-local limit).
// Goal: shmkit <= 1.5 x glibc_malloc and <= 0.2 x boost_rbtree.
#include <benchmark/benchmark.h>

#include <vector>

#include "heap_bench_common.hpp"

namespace {

template <class Arena>
void random_live10k(benchmark::State& state) {
  constexpr std::size_t kSlots = 10000;
  Arena arena(std::size_t{256} << 20);
  std::vector<void*> slots(kSlots, nullptr);
  heap_bench::Rng rng(20261121);
  for (auto _ : state) {
    std::uint64_t r = rng();
    void*& s = slots[r % kSlots];
    if (s != nullptr) {
      arena.deallocate(s);
      s = nullptr;
    } else {
      s = arena.allocate(16 + (r >> 32) % 1009);
      benchmark::DoNotOptimize(s);
    }
  }
  for (void* p : slots)
    if (p != nullptr) arena.deallocate(p);
  state.SetItemsProcessed(state.iterations());
}

BENCHMARK(random_live10k<heap_bench::ShmkitArena>)->Name("heap_random_live10k/shmkit")->Iterations(4000000);
BENCHMARK(random_live10k<heap_bench::BoostArena>)->Name("heap_random_live10k/boost_rbtree")->Iterations(1000000);
BENCHMARK(random_live10k<heap_bench::GlibcArena>)->Name("heap_random_live10k/glibc_malloc")->Iterations(4000000);

}  // namespace
