// heap_batch_200k: allocate 200,000 blocks of 16 + rand() % 1009 bytes, then free them all; time
// per allocate+free pair. Each benchmark iteration is one pair, amortised: iteration k allocates
// block k % 200000, and the iteration that completes a batch also frees the whole batch (the
// iteration count is a multiple of 200,000, so total time / iterations = time per pair).
// Variants: shmkit, boost_rbtree (managed_shared_memory's default allocator). Goal: shmkit <= 0.2 x boost.
#include <benchmark/benchmark.h>

#include <vector>

#include "heap_bench_common.hpp"

namespace {

constexpr std::size_t kBatch = 200000;

template <class Arena>
void batch_200k(benchmark::State& state) {
  Arena arena(std::size_t{512} << 20);
  std::vector<void*> blocks(kBatch, nullptr);
  heap_bench::Rng rng(7);
  std::size_t j = 0;
  for (auto _ : state) {
    void* p = arena.allocate(16 + rng() % 1009);
    benchmark::DoNotOptimize(p);
    blocks[j++] = p;
    if (j == kBatch) {
      for (void* b : blocks) arena.deallocate(b);
      j = 0;
    }
  }
  for (std::size_t i = 0; i < j; ++i) arena.deallocate(blocks[i]);
  state.SetItemsProcessed(state.iterations());
}

// Both variants run the same number of batches: the first batch of a fresh arena also pays the
// page faults of ~100 MiB, a fixed cost that a variant run for fewer batches would spread over
// fewer pairs (with 10 batches for shmkit and 3 for boost, boost's time per pair was ~15% higher
// than its steady state).
BENCHMARK(batch_200k<heap_bench::ShmkitArena>)->Name("heap_batch_200k/shmkit")->Iterations(kBatch * 10);
BENCHMARK(batch_200k<heap_bench::BoostArena>)->Name("heap_batch_200k/boost_rbtree")->Iterations(kBatch * 10);

}  // namespace
