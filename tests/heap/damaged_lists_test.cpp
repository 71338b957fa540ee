// Tests that a heap whose free lists were damaged (a wild or wrong link, a wild list head, a huge
// chunk size — issue 10) keeps working in a process that uses it: the damaged list is dropped,
// allocations still succeed and never hand out overlapping blocks, the damage is counted in
// stats().errors and reported by verify(). Each case runs in a forked child, so a crash is a test
// failure (exit by signal), not the end of the test binary.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <utility>
#include <vector>

#include "../../heap/src/layout.hpp"
#include "shmkit/heap/heap.hpp"
#include "shmkit/shm/segment.hpp"
#include "testing.hpp"

namespace {

using shmkit::Heap;
using shmkit::HeapStatus;
using shmkit::Segment;
using shmkit::heapimpl::ControlBlock;
using shmkit::heapimpl::u64;

constexpr u64 kWild = 0x0000123456789ab0ULL;  // 16-aligned, far outside any segment

// In the child, a fixture that is not as expected ends it with a code the parent reports.
#define REQUIRE(cond) \
  do {                \
    if (!(cond)) std::_Exit(30); \
  } while (0)

ControlBlock& control(Heap& heap) { return *static_cast<ControlBlock*>(static_cast<void*>(heap.control())); }
u64 off_of(Heap& heap, const void* p) { return static_cast<u64>(static_cast<const std::byte*>(p) - heap.base()); }

// Allocates a mix of sizes (small: caches; large: arena bins), writes every byte, and checks that
// no two blocks overlap. Returns 0 when all is well, else a distinct code.
int use_heap(Heap& heap) {
  std::vector<std::pair<std::byte*, std::size_t>> got;
  for (int round = 0; round < 40; ++round)
    for (std::size_t n : {16u, 48u, 100u, 700u, 1000u, 2000u, 3000u, 5000u, 9000u}) {
      void* p = heap.allocate(n + static_cast<std::size_t>(round));
      if (p == nullptr) return 2;
      std::size_t u = heap.usable_size(p);
      if (u < n) return 3;
      std::memset(p, 0x5a, u);
      got.emplace_back(static_cast<std::byte*>(p), u);
    }
  std::sort(got.begin(), got.end());
  for (std::size_t i = 1; i < got.size(); ++i)
    if (got[i - 1].first + got[i - 1].second > got[i].first) return 4;  // handed out twice
  for (auto& [p, u] : got)
    if (heap.deallocate(p) != HeapStatus::ok) return 5;
  return 0;
}

// Builds a heap with arena-free chunks in the bins, damages it with `damage`, then uses it.
int damaged_run(const std::function<void(Heap&, ControlBlock&)>& damage) {
  auto seg = Segment::create_anonymous(std::size_t{1} << 20, [] {
    shmkit::SegmentOptions o;
    o.capacity = std::size_t{64} << 20;
    return o;
  }());
  Heap& heap = Heap::attach(seg);
  std::vector<void*> blocks;
  // Free 5000-byte chunks (one bin, many chunks) kept apart by live 3000-byte ones.
  for (int i = 0; i < 30; ++i) blocks.push_back(heap.allocate(i % 2 == 0 ? 5000 : 3000));
  for (std::size_t i = 0; i < blocks.size(); i += 2) (void)heap.deallocate(blocks[i]);
  if (!heap.verify().empty()) return 20;  // the fixture itself is clean
  damage(heap, control(heap));
  int rc = use_heap(heap);
  if (rc != 0) return rc;
  if (heap.stats().errors == 0) return 6;  // the damage was met and counted
  if (heap.verify().empty()) return 7;     // and verify reports what is left of it
  return 0;
}

// The first non-empty bin with at least two chunks (so that links between chunks exist).
int bin_with_two(ControlBlock& c, Heap& heap) {
  for (int i = 0; i < shmkit::heapimpl::kBins; ++i) {
    u64 h = c.bin_head[i].load();
    if (h != 0 && *reinterpret_cast<u64*>(heap.base() + h + 16) != 0) return i;
  }
  return -1;
}

int run_child(const std::function<void(Heap&, ControlBlock&)>& damage) {
  shmkit::testing::Child child([&] { return damaged_run(damage); });
  return child.wait(std::chrono::seconds(15));
}

TEST(HeapDamagedLists, WildBinHeadIsDropped) {
  EXPECT_EQ(run_child([](Heap& heap, ControlBlock& c) {
              int i = bin_with_two(c, heap);
              REQUIRE(i >= 0);
              c.bin_head[i].store(kWild);
            }),
            0);
}

TEST(HeapDamagedLists, WildNextLinkIsNotFollowed) {
  EXPECT_EQ(run_child([](Heap& heap, ControlBlock& c) {
              int i = bin_with_two(c, heap);
              REQUIRE(i >= 0);
              *reinterpret_cast<u64*>(heap.base() + c.bin_head[i].load() + 16) = kWild;
            }),
            0);
}

// A back link that names another real free chunk (readable, but not the one linking to it):
// unlinking through it would leave the chunk reachable from its list after it is handed out.
TEST(HeapDamagedLists, WrongBackLinkNeverHandsAChunkOutTwice) {
  EXPECT_EQ(run_child([](Heap& heap, ControlBlock& c) {
              int i = bin_with_two(c, heap);
              REQUIRE(i >= 0);
              u64 head = c.bin_head[i].load();
              u64 second = *reinterpret_cast<u64*>(heap.base() + head + 16);
              *reinterpret_cast<u64*>(heap.base() + head + 24) = second;  // head's prev should be 0
              *reinterpret_cast<u64*>(heap.base() + second + 24) = 0;     // second's should be head
            }),
            0);
}

TEST(HeapDamagedLists, HugeFreeChunkSizeIsNotFollowed) {
  EXPECT_EQ(run_child([](Heap& heap, ControlBlock& c) {
              int i = bin_with_two(c, heap);
              REQUIRE(i >= 0);
              u64 head = c.bin_head[i].load();
              *reinterpret_cast<u64*>(heap.base() + head + 8) =
                  shmkit::heapimpl::make_word(c.check_key, head, u64{1} << 40, shmkit::heapimpl::st_free);
            }),
            0);
}

// This thread's own cache bin names a wild chunk: the allocation fast path drops the list.
TEST(HeapDamagedLists, WildCacheHeadIsDropped) {
  EXPECT_EQ(run_child([](Heap& heap, ControlBlock& c) {
              void* p = heap.allocate(100);
              REQUIRE(p != nullptr);
              u64 ch = off_of(heap, p) - shmkit::heapimpl::kHeaderSize;
              REQUIRE(heap.deallocate(p) == HeapStatus::ok);
              bool found = false;
              for (auto& slot : c.caches)
                for (auto& bin : slot.bins)
                  if (bin.head.load() == ch) {
                    bin.head.store(kWild);
                    found = true;
                  }
              REQUIRE(found);
            }),
            0);
}

}  // namespace
