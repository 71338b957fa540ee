// Tests allocation patterns against a model: random sizes and alignments (small cached classes,
// large boundary-tag chunks, page-aligned blocks), reallocate and usable_size, the contents of every
// live block checked against what the model wrote, and verify() clean after every phase; also the
// stats figures, growth of the segment under allocation, and out-of-memory only at capacity.
#include <gtest/gtest.h>

#include <atomic>
#include <cstring>
#include <map>
#include <random>

#include "shmkit/heap/heap.hpp"
#include "shmkit/shm/segment.hpp"
#include "testing.hpp"
#include "verify_expect.hpp"

namespace {

using shmkit::Heap;
using shmkit::HeapStatus;
using shmkit::Segment;


struct Block {
  std::size_t size;
  std::size_t align;
  unsigned char fill;
};

void fill(void* p, const Block& b) { std::memset(p, b.fill, b.size); }
bool intact(const void* p, const Block& b) {
  auto* c = static_cast<const unsigned char*>(p);
  for (std::size_t i = 0; i < b.size; ++i)
    if (c[i] != b.fill) return false;
  return true;
}

TEST(HeapModel, RandomSizesAndAlignmentsAgainstModel) {
  Segment seg = Segment::create_anonymous(1 << 20, {.capacity = std::size_t{1} << 30});
  Heap& heap = Heap::attach(seg);
  std::mt19937_64 rng(42);
  std::map<void*, Block> live;
  auto check_all = [&] {
    for (auto& [p, b] : live) {
      ASSERT_TRUE(intact(p, b)) << "block " << p << " of " << b.size << " bytes was overwritten";
      ASSERT_GE(heap.usable_size(p), b.size);
      ASSERT_EQ(reinterpret_cast<std::uintptr_t>(p) % b.align, 0u);
    }
  };
  for (int phase = 0; phase < 6; ++phase) {
    for (int i = 0; i < 20000; ++i) {
      int op = static_cast<int>(rng() % 10);
      if (op < 5 || live.empty()) {
        std::size_t size;
        int kind = static_cast<int>(rng() % 10);
        if (kind < 6) size = 1 + rng() % 1024;
        else if (kind < 9) size = 1025 + rng() % 20000;
        else size = 20000 + rng() % 300000;
        std::size_t align = (rng() % 8 == 0) ? (std::size_t{1} << (4 + rng() % 9)) : 16;  // up to 4096
        void* p = heap.allocate(size, align);
        ASSERT_NE(p, nullptr) << "size " << size << " align " << align;
        ASSERT_EQ(live.count(p), 0u) << "a live block was handed out twice";
        Block b{size, align, static_cast<unsigned char>(rng())};
        fill(p, b);
        live[p] = b;
      } else if (op < 9) {
        auto it = live.begin();
        std::advance(it, static_cast<long>(rng() % live.size()));
        ASSERT_TRUE(intact(it->first, it->second));
        ASSERT_EQ(heap.deallocate(it->first), HeapStatus::ok);
        live.erase(it);
      } else {
        auto it = live.begin();
        std::advance(it, static_cast<long>(rng() % live.size()));
        if (it->second.align != 16) continue;
        Block b = it->second;
        std::size_t nsize = 1 + rng() % 4000;
        void* q = heap.reallocate(it->first, nsize);
        ASSERT_NE(q, nullptr);
        auto* c = static_cast<unsigned char*>(q);
        for (std::size_t k = 0; k < std::min(nsize, b.size); ++k) ASSERT_EQ(c[k], b.fill);
        live.erase(it);
        b.size = nsize;
        fill(q, b);
        live[q] = b;
      }
    }
    check_all();
    EXPECT_VERIFY_CLEAN(heap);
    // free half of everything between phases (shrinks and grows the live set)
    int k = 0;
    for (auto it = live.begin(); it != live.end();) {
      if (k++ % 2 == 0) {
        ASSERT_EQ(heap.deallocate(it->first), HeapStatus::ok);
        it = live.erase(it);
      } else {
        ++it;
      }
    }
    EXPECT_VERIFY_CLEAN(heap);
  }
  auto st = heap.stats();
  EXPECT_GT(st.blocks_in_use, 0u);
  EXPECT_EQ(st.blocks_in_use, live.size());
  for (auto& [p, b] : live) ASSERT_EQ(heap.deallocate(p), HeapStatus::ok);
  live.clear();
  EXPECT_VERIFY_CLEAN(heap);
  st = heap.stats();
  EXPECT_EQ(st.blocks_in_use, 0u);
  EXPECT_EQ(st.bytes_in_use, 0u);
  EXPECT_GT(st.bytes_free, 0u);
  EXPECT_GE(st.largest_free, 1u << 20);
  Heap::detach(seg);
}

TEST(HeapModel, GrowsTheSegmentThenReportsOutOfMemoryAtCapacity) {
  const std::size_t cap = 64 << 20;
  Segment seg = Segment::create_anonymous(1 << 20, {.capacity = cap});
  Heap& heap = Heap::attach(seg);
  std::size_t initial = seg.size();
  std::vector<void*> blocks;
  std::size_t total = 0;
  for (;;) {
    std::size_t n = blocks.size() % 3 == 0 ? 100000 : 500;
    void* p = heap.allocate(n);
    if (p == nullptr) break;
    std::memset(p, 0x5a, n);
    blocks.push_back(p);
    total += n;
    ASSERT_LT(total, cap) << "allocated more than the capacity";
  }
  EXPECT_GT(seg.size(), initial) << "the heap did not grow the segment";
  EXPECT_GT(total, cap * 8 / 10) << "out of memory long before the capacity: " << total;
  EXPECT_EQ(seg.size(), cap);
  EXPECT_VERIFY_CLEAN(heap);
  for (void* p : blocks) ASSERT_EQ(heap.deallocate(p), HeapStatus::ok);
  EXPECT_VERIFY_CLEAN(heap);
  void* big = heap.allocate(cap / 2);
  EXPECT_NE(big, nullptr) << "after freeing everything, a large block must fit (coalescing)";
  EXPECT_EQ(heap.deallocate(big), HeapStatus::ok);
  Heap::detach(seg);
}

TEST(HeapModel, GrowthByAnotherProcessIsSeen) {
  Segment seg = Segment::create_anonymous(1 << 20, {.capacity = 256 << 20});
  Heap& heap = Heap::attach(seg);
  void* p = heap.allocate(64);
  ASSERT_NE(p, nullptr);
  shmkit::testing::Child child([&] {
    Heap& h = Heap::attach(seg);
    std::vector<void*> v;
    for (int i = 0; i < 40; ++i) {
      void* q = h.allocate(1 << 20);
      if (q == nullptr) return 1;
      std::memset(q, i, 1 << 20);
      v.push_back(q);
    }
    // keep the blocks: the parent checks and frees them
    auto* out = static_cast<void**>(h.allocate(sizeof(void*) * 40));
    for (int i = 0; i < 40; ++i) out[i] = v[static_cast<std::size_t>(i)];
    *static_cast<void***>(p) = out;
    return 0;
  });
  ASSERT_EQ(child.wait(), 0);
  void** out = *static_cast<void***>(p);
  for (int i = 0; i < 40; ++i) {
    auto* c = static_cast<unsigned char*>(out[i]);
    ASSERT_EQ(c[0], i);
    ASSERT_EQ(c[(1 << 20) - 1], i);
    ASSERT_EQ(heap.deallocate(out[i]), HeapStatus::ok);
  }
  ASSERT_EQ(heap.deallocate(out), HeapStatus::ok);
  ASSERT_EQ(heap.deallocate(p), HeapStatus::ok);
  EXPECT_GE(seg.size(), std::size_t{40} << 20);
  heap.reclaim_dead();  // the child's cache
  EXPECT_VERIFY_CLEAN(heap);
  EXPECT_EQ(heap.stats().blocks_in_use, 0u);
  Heap::detach(seg);
}

TEST(HeapModel, LiveVerifyWhileAnotherProcessAllocates) {
  auto seg = Segment::create_anonymous(8 << 20);
  Heap& heap = Heap::attach(seg);
  auto* stop = static_cast<std::atomic<int>*>(heap.allocate(sizeof(std::atomic<int>)));
  new (stop) std::atomic<int>(0);
  shmkit::testing::Child child([&] {
    Heap& h = Heap::attach(seg);
    std::mt19937 rng(5);
    std::vector<void*> v(512, nullptr);
    while (stop->load() == 0) {
      void*& p = v[rng() % v.size()];
      if (p != nullptr) {
        if (h.deallocate(p) != HeapStatus::ok) return 1;
        p = nullptr;
      } else {
        p = h.allocate(16 + rng() % 3000);
        if (p == nullptr) return 2;
      }
    }
    return 0;
  });
  for (int i = 0; i < 200; ++i) {
    auto f = heap.verify(shmkit::VerifyMode::live);
    ASSERT_TRUE(f.empty()) << "live verify, round " << i << ":\n" << shmkit::testing::findings_text(f);
  }
  stop->store(1);
  EXPECT_EQ(child.wait(), 0);
  Heap::detach(seg);
}

TEST(HeapModel, SegmentClosedWithoutDetachThenReopened) {
  shmkit::testing::ShmNameGuard name(shmkit::testing::unique_name("reopen"));
  std::uint64_t off = 0;
  {
    auto seg = Segment::create(name.name(), 4 << 20);
    Heap& heap = Heap::attach(seg);
    void* p = heap.allocate(100);
    std::memset(p, 0x3c, 100);
    off = seg.offset_of(p);
    (void)heap.allocate(5000);
    // closed here without Heap::detach
  }
  auto seg = Segment::open(name.name());
  Heap& heap = Heap::attach(seg);
  auto* p = static_cast<unsigned char*>(seg.pointer_at(off, 100));
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(p[99], 0x3c);
  EXPECT_EQ(heap.usable_size(p), 112u);
  EXPECT_EQ(heap.deallocate(p), HeapStatus::ok);
  void* q = heap.allocate(100);
  EXPECT_NE(q, nullptr);
  EXPECT_EQ(heap.deallocate(q), HeapStatus::ok);
  EXPECT_TRUE(heap.verify().empty());
  Heap::detach(seg);
}

}  // namespace
