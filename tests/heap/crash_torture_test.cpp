// Crash torture: several forked worker processes allocate (small cached blocks, large arena
// blocks, page-aligned blocks; owned and shared), write checksummed contents, and free, while the
// supervisor SIGKILLs a random worker at a random moment and starts a new one. After every kill
// the supervisor pauses the survivors between operations, calls reclaim_dead(), and checks that
// verify() finds nothing and that every surviving worker's blocks still hold their checksums and
// do not overlap (no block handed out twice). Workers also run reclaim_dead() now and then, so
// kills land inside a reclaim too. At the end every worker frees everything: the heap
// must hold no owned block and at most one leaked shared block per kill (a kill between the
// allocation returning and the worker recording it, or between recording `freeing` and the free);
// the dead worker's other shared blocks are checked and freed by the supervisor. Prints kills, repairs, findings, corrupted.
//
// Knob: SHMKIT_HEAP_TORTURE_KILLS=N (default 200) for a longer run.
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/wait.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <random>
#include <thread>

#include "shmkit/heap/heap.hpp"
#include "shmkit/shm/segment.hpp"
#include "shmkit/sys/syscall.hpp"
#include "testing.hpp"

namespace {

using shmkit::Heap;
using shmkit::HeapStatus;
using shmkit::Segment;

constexpr int kWorkers = 4;
constexpr int kMaxRecords = 160;

struct Record {
  std::uint64_t off;
  std::uint64_t size;
  std::uint64_t seed;
  std::uint64_t owned;
};

// Outside the heap (its own MAP_SHARED mapping) so that the heap's accounting is the heap's alone.
struct WorkerTable {
  std::atomic<std::uint32_t> count;  // records [0, count) are live
  std::atomic<std::uint32_t> paused_epoch;
  std::atomic<std::uint64_t> ops;
  std::atomic<std::uint64_t> freeing;  // offset of the block being freed (0 = none)
  Record rec[kMaxRecords];
};
struct Shared {
  std::atomic<std::uint32_t> pause_epoch;  // odd: pause requested
  std::atomic<std::uint32_t> stop;
  WorkerTable w[kWorkers];
};

std::uint64_t mix(std::uint64_t x) {
  x += 0x9E3779B97F4A7C15ULL;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
  return x ^ (x >> 31);
}
void write_pattern(void* p, std::uint64_t size, std::uint64_t seed) {
  auto* b = static_cast<unsigned char*>(p);
  for (std::uint64_t i = 0; i < size; i += 8) {
    std::uint64_t v = mix(seed + i);
    std::memcpy(b + i, &v, std::min<std::uint64_t>(8, size - i));
  }
}
bool check_pattern(const void* p, std::uint64_t size, std::uint64_t seed) {
  auto* b = static_cast<const unsigned char*>(p);
  for (std::uint64_t i = 0; i < size; i += 8) {
    std::uint64_t v = mix(seed + i);
    if (std::memcmp(b + i, &v, std::min<std::uint64_t>(8, size - i)) != 0) return false;
  }
  return true;
}

int worker(Segment& seg, Shared* sh, int id, std::uint64_t seed) {
  Heap& heap = Heap::attach(seg);
  WorkerTable& t = sh->w[id];
  std::mt19937_64 rng(seed);
  auto free_one = [&](std::uint32_t i) -> bool {
    Record r = t.rec[i];
    if (!check_pattern(seg.base() + r.off, r.size, r.seed)) return false;
    // `freeing` names the block while it is being freed: the supervisor skips it when this worker
    // dies (it may be free already, or even handed out again).
    t.freeing.store(r.off, std::memory_order_release);
    if (heap.deallocate(seg.base() + r.off) != HeapStatus::ok) return false;
    std::uint32_t n = t.count.load(std::memory_order_relaxed);
    t.rec[i] = t.rec[n - 1];
    t.count.store(n - 1, std::memory_order_release);
    t.freeing.store(0, std::memory_order_release);
    return true;
  };
  for (;;) {
    std::uint32_t e = sh->pause_epoch.load(std::memory_order_acquire);
    if (e & 1) {
      t.paused_epoch.store(e, std::memory_order_release);
      while (sh->pause_epoch.load(std::memory_order_acquire) == e) std::this_thread::yield();
      continue;
    }
    if (sh->stop.load(std::memory_order_acquire)) break;
    t.ops.fetch_add(1, std::memory_order_relaxed);
    // Now and then a worker reclaims dead workers' caches and owned blocks itself, so that kills
    // also land inside a reclaim.
    if (rng() % 2048 == 0) (void)heap.reclaim_dead();
    std::uint32_t n = t.count.load(std::memory_order_relaxed);
    bool alloc = n == 0 || (n < kMaxRecords && rng() % 2 == 0);
    if (alloc) {
      int kind = static_cast<int>(rng() % 16);
      std::uint64_t size = kind < 11 ? 8 + rng() % 1024 : kind < 15 ? 1025 + rng() % 16000 : 100 + rng() % 6000;
      std::size_t align = kind == 15 ? 4096 : 16;
      bool owned = rng() % 4 != 0;
      void* p = owned ? heap.allocate_owned(size, align) : heap.allocate(size, align);
      if (p == nullptr) return 3;
      if (reinterpret_cast<std::uintptr_t>(p) % align != 0) return 4;
      std::uint64_t s = rng();
      write_pattern(p, size, s);
      t.rec[n] = Record{seg.offset_of(p), size, s, owned ? 1u : 0u};
      t.count.store(n + 1, std::memory_order_release);
    } else {
      if (!free_one(static_cast<std::uint32_t>(rng() % n))) return 5;
    }
  }
  while (t.count.load(std::memory_order_relaxed) > 0)
    if (!free_one(0)) return 6;
  return 0;
}

TEST(HeapCrashTorture, KilledWorkersNeverBreakTheHeap) {
  int target_kills = 200;
  if (const char* k = std::getenv("SHMKIT_HEAP_TORTURE_KILLS")) target_kills = std::max(1, std::atoi(k));
  Segment seg = Segment::create_anonymous(4 << 20, {.capacity = std::size_t{1} << 30});
  Heap& heap = Heap::attach(seg);
  void* mem = nullptr;
  ASSERT_EQ(shmkit::sys::mmap(&mem, nullptr, sizeof(Shared), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0), 0);
  auto* sh = new (mem) Shared{};
  std::mt19937_64 rng(12345);
  std::vector<std::optional<shmkit::testing::Child>> kids(kWorkers);
  auto spawn = [&](int id) {
    sh->w[id].count.store(0, std::memory_order_relaxed);
    sh->w[id].paused_epoch.store(0, std::memory_order_relaxed);
    sh->w[id].freeing.store(0, std::memory_order_relaxed);
    std::uint64_t s = rng();
    kids[static_cast<std::size_t>(id)].emplace([&seg, sh, id, s] { return worker(seg, sh, id, s); });
  };
  for (int i = 0; i < kWorkers; ++i) spawn(i);

  int kills = 0, findings_total = 0, corrupted = 0, exits = 0;
  const auto start = std::chrono::steady_clock::now();
  const auto time_cap = std::chrono::seconds(target_kills > 200 ? 3600 : 45);
  std::uint32_t epoch = 0;
  while (kills < target_kills && std::chrono::steady_clock::now() - start < time_cap) {
    // Let the workers run a random while (most of it inside heap calls), then kill one.
    std::this_thread::sleep_for(std::chrono::microseconds(200 + rng() % 3000));
    int victim = static_cast<int>(rng() % kWorkers);
    kids[static_cast<std::size_t>(victim)]->kill(SIGKILL);
    int st = kids[static_cast<std::size_t>(victim)]->wait(std::chrono::seconds(10));
    if (st != -SIGKILL) {
      ADD_FAILURE() << "worker " << victim << " ended with " << st << " before it was killed";
      ++exits;
    }
    kids[static_cast<std::size_t>(victim)].reset();
    ++kills;
    // Pause the survivors between operations.
    epoch += 2;
    sh->pause_epoch.store(epoch - 1, std::memory_order_release);
    for (int i = 0; i < kWorkers; ++i) {
      if (i == victim) continue;
      auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
      while (sh->w[i].paused_epoch.load(std::memory_order_acquire) != epoch - 1) {
        ASSERT_LT(std::chrono::steady_clock::now(), deadline) << "worker " << i << " did not pause (hung on a lock?)";
        std::this_thread::yield();
      }
    }
    heap.reclaim_dead();
    auto f = heap.verify();
    findings_total += static_cast<int>(f.size());
    for (std::size_t i = 0; i < f.size() && i < 10; ++i)
      ADD_FAILURE() << "after kill " << kills << ": @" << f[i].offset << " " << f[i].message;
    // The dead worker's shared blocks are still in use (shared ownership): check and free them
    // (its owned blocks were freed by reclaim_dead).
    {
      WorkerTable& t = sh->w[victim];
      std::uint32_t n = t.count.load(std::memory_order_acquire);
      std::uint64_t freeing = t.freeing.load(std::memory_order_acquire);
      for (std::uint32_t r = 0; r < n; ++r) {
        const Record& rec = t.rec[r];
        if (rec.owned || rec.off == freeing) continue;
        void* p = seg.pointer_at(rec.off, rec.size);
        if (p == nullptr || !check_pattern(p, rec.size, rec.seed)) ++corrupted;
        else if (heap.deallocate(p) != HeapStatus::ok) ++corrupted;
      }
      t.count.store(0, std::memory_order_relaxed);
    }
    std::vector<std::pair<std::uint64_t, std::uint64_t>> ranges;
    for (int i = 0; i < kWorkers; ++i) {
      if (i == victim) continue;
      WorkerTable& t = sh->w[i];
      std::uint32_t n = t.count.load(std::memory_order_acquire);
      for (std::uint32_t r = 0; r < n; ++r) {
        const Record& rec = t.rec[r];
        void* p = seg.pointer_at(rec.off, rec.size);
        if (p == nullptr || !check_pattern(p, rec.size, rec.seed) || heap.usable_size(p) < rec.size) ++corrupted;
        ranges.emplace_back(rec.off, rec.size);
      }
    }
    std::sort(ranges.begin(), ranges.end());
    for (std::size_t i = 1; i < ranges.size(); ++i)
      if (ranges[i - 1].first + ranges[i - 1].second > ranges[i].first) ++corrupted;  // handed out twice
    ASSERT_EQ(corrupted, 0) << "after kill " << kills;
    ASSERT_EQ(findings_total, 0) << "after kill " << kills;
    spawn(victim);
    sh->pause_epoch.store(epoch, std::memory_order_release);
  }
  sh->stop.store(1, std::memory_order_release);
  for (int i = 0; i < kWorkers; ++i) {
    int st = kids[static_cast<std::size_t>(i)]->wait(std::chrono::seconds(20));
    EXPECT_EQ(st, 0) << "worker " << i << " failed while freeing its blocks";
    kids[static_cast<std::size_t>(i)].reset();
  }
  heap.reclaim_dead();
  auto f = heap.verify();
  findings_total += static_cast<int>(f.size());
  auto st = heap.stats();
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::uint64_t ops = 0;
  for (auto& w : sh->w) ops += w.ops.load();
  std::printf(
      "[heap torture] kills: %d, repairs (lock owner died): %llu, caches reclaimed: %llu, owned blocks "
      "reclaimed: %llu, verify findings: %d, corrupted blocks: %d, leaked shared blocks: %llu, "
      "survivor ops (last generation): %llu, %.1f s\n",
      kills, static_cast<unsigned long long>(st.repairs), static_cast<unsigned long long>(st.caches_reclaimed),
      static_cast<unsigned long long>(st.owned_reclaimed), findings_total, corrupted,
      static_cast<unsigned long long>(st.blocks_in_use), static_cast<unsigned long long>(ops), secs);
  EXPECT_EQ(findings_total, 0);
  EXPECT_EQ(corrupted, 0);
  EXPECT_EQ(exits, 0);
  EXPECT_GE(kills, std::min(target_kills, 200));
  EXPECT_EQ(st.bytes_owned, 0u) << "owned blocks of dead workers were not reclaimed";
  // A kill can leak one shared block: between allocate() returning and the record, or while freeing.
  EXPECT_LE(st.blocks_in_use, static_cast<std::uint64_t>(kills)) << "more leaked blocks than kills";
  EXPECT_GT(st.caches_reclaimed, 0u);
  (void)shmkit::sys::munmap(mem, sizeof(Shared));
  Heap::detach(seg);
}

}  // namespace
