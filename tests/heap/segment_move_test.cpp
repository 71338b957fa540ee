// Tests that a Heap stays valid when the Segment object it was attached through is moved (issue 14
// item 13, "Moving a Segment silently breaks its Heap"): after the Segment is moved into a
// std::vector (and the vector reallocates, and by move assignment), allocate still succeeds, the
// heap still grows the segment, named objects still work, attach returns the same Heap, and a
// forked process sees what was written; closing the last Segment object of the mapping forgets the
// Heap, so a new segment at the same address gets a fresh one.
#include <gtest/gtest.h>

#include <cstring>
#include <utility>
#include <vector>

#include "shmkit/heap/heap.hpp"
#include "shmkit/shm/segment.hpp"
#include "testing.hpp"

namespace {

using shmkit::Heap;
using shmkit::HeapStatus;
using shmkit::Segment;

TEST(HeapSegmentMove, MovingASegmentKeepsItsHeapValid) {
  shmkit::testing::ShmNameGuard name(shmkit::testing::unique_name("segmove"));
  shmkit::SegmentOptions o;
  o.capacity = std::size_t{64} << 20;
  auto seg = Segment::create(name.name(), std::size_t{1} << 20, o);
  Heap& heap = Heap::attach(seg);
  void* before = heap.allocate(100);
  ASSERT_NE(before, nullptr);
  std::memset(before, 0x5a, 100);

  std::vector<Segment> segments;
  segments.push_back(std::move(seg));
  for (int i = 0; i < 8; ++i) segments.push_back(Segment{});  // the vector reallocates: moved again
  void* small = heap.allocate(64);
  EXPECT_NE(small, nullptr) << "allocate after the Segment was moved";
  void* grown = heap.allocate(std::size_t{4} << 20);  // needs the segment to grow
  EXPECT_NE(grown, nullptr) << "growth after the Segment was moved";
  int* named = heap.find_or_construct<int>("after-move", 42);
  ASSERT_NE(named, nullptr);
  EXPECT_EQ(&Heap::attach(segments[0]), &heap) << "attach through the moved-to object is the same Heap";

  Segment assigned;
  assigned = std::move(segments[0]);
  EXPECT_NE(heap.allocate(5000), nullptr) << "allocate after move assignment";
  EXPECT_EQ(&Heap::attach(assigned), &heap);

  // Another process sees the heap's contents through its own mapping.
  const std::uint64_t off = assigned.offset_of(before);
  shmkit::testing::Child reader([&] {
    Segment s = Segment::open(name.name());
    Heap& h = Heap::attach(s);
    auto* p = static_cast<unsigned char*>(s.pointer_at(off, 100));
    int* n = h.find<int>("after-move");
    return p != nullptr && p[99] == 0x5a && n != nullptr && *n == 42 ? 0 : 1;
  });
  EXPECT_EQ(reader.wait(), 0);

  EXPECT_EQ(heap.deallocate(small), HeapStatus::ok);
  EXPECT_EQ(heap.deallocate(grown), HeapStatus::ok);
  EXPECT_EQ(heap.deallocate(before), HeapStatus::ok);
  auto f = heap.verify();
  EXPECT_TRUE(f.empty()) << f.front().message;
  Heap::detach(assigned);
}

TEST(HeapSegmentMove, ClosingTheMovedSegmentForgetsItsHeap) {
  shmkit::testing::ShmNameGuard name(shmkit::testing::unique_name("segmove-close"));
  {
    auto seg = Segment::create(name.name(), std::size_t{1} << 20);
    (void)Heap::attach(seg).allocate(100);
    Segment moved(std::move(seg));
    (void)Heap::attach(moved).allocate(200);
    // closed here without Heap::detach: the Heap goes with the mapping
  }
  auto seg = Segment::open(name.name());
  EXPECT_EQ(Heap::find_attached(seg.base()), nullptr) << "a Heap outlived its mapping";
  Heap& heap = Heap::attach(seg);
  void* p = heap.allocate(100);
  EXPECT_NE(p, nullptr);
  EXPECT_EQ(heap.deallocate(p), HeapStatus::ok);
  auto f = heap.verify();
  EXPECT_TRUE(f.empty()) << f.front().message;
  Heap::detach(seg);
}

}  // namespace
