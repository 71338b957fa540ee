// Tests the large-allocation flush of parked small chunks: after a burst of small frees the freed
// chunks sit on the central lists and in the freeing thread's cache (fast to reuse for the same
// sizes, but not coalesced, so they fence the free arena space). A large allocation made while
// they hold more than 1/64 of the arena's span gives them all back to the arena first, so that
// free space merges and the large block can be placed in it; while they hold less, they stay
// parked. verify() is clean after each step, and the segment's bytes are the same ones a
// forked process then sees.
#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "shmkit/heap/heap.hpp"
#include "shmkit/shm/segment.hpp"
#include "testing.hpp"
#include "verify_expect.hpp"

namespace {

using shmkit::Heap;
using shmkit::HeapStatus;
using shmkit::Segment;


// Small blocks of 256 bytes, 1 MiB of them, then a large block above them (so the small blocks'
// space does not merge into top when they are freed).
struct Burst {
  std::vector<void*> small;
  void* fence = nullptr;
};
Burst allocate_burst(Heap& heap, std::size_t count) {
  Burst b;
  for (std::size_t i = 0; i < count; ++i) {
    void* p = heap.allocate(256);
    if (p == nullptr) return b;
    std::memset(p, 0x5a, 256);
    b.small.push_back(p);
  }
  b.fence = heap.allocate(64 * 1024);
  return b;
}

TEST(HeapSmallFlush, LargeAllocationGivesParkedSmallChunksBackWhenTheyAreMany) {
  Segment seg = Segment::create_anonymous(1 << 20, {.capacity = std::size_t{256} << 20});
  Heap& heap = Heap::attach(seg);
  Burst b = allocate_burst(heap, 4096);  // 1 MiB of 256-byte blocks
  ASSERT_EQ(b.small.size(), 4096u);
  ASSERT_NE(b.fence, nullptr);
  // A free hole that fits the large request below, so that the request does not need top to move
  // (the scavenge before extending top is another mechanism; this test is about the flush).
  void* hole = heap.allocate(200 * 1024);
  void* guard = heap.allocate(64 * 1024);
  ASSERT_NE(hole, nullptr);
  ASSERT_NE(guard, nullptr);
  ASSERT_EQ(heap.deallocate(hole), HeapStatus::ok);
  for (void* p : b.small) ASSERT_EQ(heap.deallocate(p), HeapStatus::ok);
  EXPECT_VERIFY_CLEAN(heap);
  const auto before = heap.stats();
  // 1 MiB parked in a span of ~1.4 MiB: far above 1/64 of it.
  ASSERT_GE(before.bytes_cached, std::uint64_t{1} << 20) << "the freed small chunks are parked (cached)";

  void* large = heap.allocate(100 * 1024);
  ASSERT_NE(large, nullptr);
  const auto after = heap.stats();
  EXPECT_EQ(after.bytes_cached, 0u) << "the large allocation gave the parked small chunks back";
  EXPECT_LE(after.arena_end, before.arena_end) << "and the heap did not grow for it";
  EXPECT_GE(after.largest_free, std::uint64_t{1} << 20) << "the small chunks merged into one free chunk";
  EXPECT_VERIFY_CLEAN(heap);

  // The merged space serves small and large blocks again, and a forked process sees what the
  // parent wrote there.
  void* small_again = heap.allocate(256);
  ASSERT_NE(small_again, nullptr);
  std::memset(large, 0x33, 100 * 1024);
  std::memset(small_again, 0x44, 256);
  const std::uint64_t large_off = seg.offset_of(large), small_off = seg.offset_of(small_again);
  shmkit::testing::Child child([&] {
    const auto* l = static_cast<const unsigned char*>(seg.pointer_at(large_off, 100 * 1024));
    const auto* s = static_cast<const unsigned char*>(seg.pointer_at(small_off, 256));
    if (l == nullptr || s == nullptr) return 1;
    for (std::size_t i = 0; i < 100 * 1024; ++i)
      if (l[i] != 0x33) return 2;
    for (std::size_t i = 0; i < 256; ++i)
      if (s[i] != 0x44) return 3;
    return 0;
  });
  EXPECT_EQ(child.wait(), 0);
  ASSERT_EQ(heap.deallocate(large), HeapStatus::ok);
  ASSERT_EQ(heap.deallocate(small_again), HeapStatus::ok);
  ASSERT_EQ(heap.deallocate(b.fence), HeapStatus::ok);
  ASSERT_EQ(heap.deallocate(guard), HeapStatus::ok);
  EXPECT_VERIFY_CLEAN(heap);
  Heap::detach(seg);
}

TEST(HeapSmallFlush, FewParkedSmallChunksStayParkedForReuse) {
  Segment seg = Segment::create_anonymous(1 << 20, {.capacity = std::size_t{256} << 20});
  Heap& heap = Heap::attach(seg);
  // 8 MiB of large blocks make the span big; 64 small blocks (16 KiB) are well below 1/64 of it.
  std::vector<void*> big;
  for (int i = 0; i < 128; ++i) {
    big.push_back(heap.allocate(64 * 1024));
    ASSERT_NE(big.back(), nullptr);
  }
  Burst b = allocate_burst(heap, 64);
  ASSERT_EQ(b.small.size(), 64u);
  for (void* p : b.small) ASSERT_EQ(heap.deallocate(p), HeapStatus::ok);
  const auto before = heap.stats();
  ASSERT_GE(before.bytes_cached, 64u * 256);
  void* large = heap.allocate(100 * 1024);
  ASSERT_NE(large, nullptr);
  EXPECT_EQ(heap.stats().bytes_cached, before.bytes_cached) << "a few parked chunks are kept for reuse";
  EXPECT_VERIFY_CLEAN(heap);
  ASSERT_EQ(heap.deallocate(large), HeapStatus::ok);
  ASSERT_EQ(heap.deallocate(b.fence), HeapStatus::ok);
  for (void* p : big) ASSERT_EQ(heap.deallocate(p), HeapStatus::ok);
  EXPECT_VERIFY_CLEAN(heap);
  Heap::detach(seg);
}

}  // namespace
