// Tests that misuse is reported, never silently accepted: double frees (small cached blocks and
// large arena blocks, also from another process), pointers that did not come from this heap
// (stack, malloc, another segment's heap, inside a block, misaligned), usable_size/reallocate of
// such pointers, bad alignments; and `shmkit verify NAME`: exit 0 on a healthy segment, non-zero
// with a message on one whose heap was damaged.
#include <gtest/gtest.h>

#include <cstdlib>
#include <cstdint>
#include <cstring>
#include <vector>

#include "shmkit/heap/heap.hpp"
#include "shmkit/shm/segment.hpp"
#include "testing.hpp"

namespace {

using shmkit::Heap;
using shmkit::HeapStatus;
using shmkit::Segment;

TEST(HeapErrors, DoubleFreeIsReported) {
  auto seg = Segment::create_anonymous(4 << 20);
  Heap& heap = Heap::attach(seg);
  for (std::size_t n : {8u, 100u, 1000u, 5000u, 200000u}) {
    void* p = heap.allocate(n);
    ASSERT_NE(p, nullptr);
    ASSERT_EQ(heap.deallocate(p), HeapStatus::ok);
    EXPECT_EQ(heap.deallocate(p), HeapStatus::double_free) << "size " << n;
    EXPECT_EQ(heap.usable_size(p), 0u);
    EXPECT_EQ(heap.reallocate(p, 10), nullptr);
  }
  // A block freed by another process, then freed again here.
  void* q = heap.allocate(64);
  shmkit::testing::Child child([&] { return Heap::attach(seg).deallocate(q) == HeapStatus::ok ? 0 : 1; });
  ASSERT_EQ(child.wait(), 0);
  EXPECT_EQ(heap.deallocate(q), HeapStatus::double_free);
  EXPECT_GE(heap.stats().errors, 6u);
  heap.reclaim_dead();
  auto f = heap.verify();
  EXPECT_TRUE(f.empty()) << f.front().message;
  Heap::detach(seg);
}

TEST(HeapErrors, ForeignPointersAreReported) {
  auto seg = Segment::create_anonymous(4 << 20);
  auto other = Segment::create_anonymous(4 << 20);
  Heap& heap = Heap::attach(seg);
  Heap& other_heap = Heap::attach(other);
  int on_stack = 0;
  void* from_malloc = std::malloc(64);
  void* from_other = other_heap.allocate(64);
  void* big = heap.allocate(10000);
  void* small = heap.allocate(48);
  EXPECT_EQ(heap.deallocate(&on_stack), HeapStatus::foreign_pointer);
  EXPECT_EQ(heap.deallocate(from_malloc), HeapStatus::foreign_pointer);
  EXPECT_EQ(heap.deallocate(from_other), HeapStatus::foreign_pointer);
  EXPECT_EQ(heap.deallocate(static_cast<char*>(big) + 16), HeapStatus::foreign_pointer) << "inside a block";
  EXPECT_EQ(heap.deallocate(static_cast<char*>(big) + 4096), HeapStatus::foreign_pointer) << "inside a block";
  EXPECT_EQ(heap.deallocate(static_cast<char*>(small) + 1), HeapStatus::foreign_pointer) << "misaligned";
  EXPECT_EQ(heap.deallocate(seg.base() + 64), HeapStatus::foreign_pointer) << "the segment header";
  EXPECT_EQ(heap.deallocate(nullptr), HeapStatus::null_pointer);
  EXPECT_EQ(heap.usable_size(&on_stack), 0u);
  EXPECT_EQ(heap.reallocate(from_malloc, 100), nullptr);
  EXPECT_EQ(heap.allocate(64, 3), nullptr) << "alignment not a power of two";
  EXPECT_EQ(heap.allocate(64, 1 << 20), nullptr) << "alignment above the page size";
  EXPECT_EQ(heap.allocate(std::size_t{1} << 50), nullptr) << "larger than the capacity";
  // Everything still works and nothing was damaged.
  EXPECT_EQ(heap.deallocate(big), HeapStatus::ok);
  EXPECT_EQ(heap.deallocate(small), HeapStatus::ok);
  EXPECT_EQ(other_heap.deallocate(from_other), HeapStatus::ok);
  EXPECT_TRUE(heap.verify().empty());
  EXPECT_TRUE(other_heap.verify().empty());
  EXPECT_GE(heap.stats().errors, 8u);
  std::free(from_malloc);
  Heap::detach(other);
  Heap::detach(seg);
}

TEST(HeapErrors, ShmkitVerifyCommandFindsDamage) {
  shmkit::testing::ShmNameGuard name(shmkit::testing::unique_name("heapverify"));
  auto seg = Segment::create(name.name(), 4 << 20);
  Heap& heap = Heap::attach(seg);
  std::vector<void*> blocks;
  for (int i = 0; i < 50; ++i) blocks.push_back(heap.allocate(3000));
  for (int i = 0; i < 50; i += 2) ASSERT_EQ(heap.deallocate(blocks[static_cast<std::size_t>(i)]), HeapStatus::ok);
  auto ok = shmkit::testing::run_tool({"verify", name.name()});
  EXPECT_EQ(ok.exit_code, 0) << ok.out << ok.err;
  // Damage: overwrite the header (size/state word) of a live block, as a buffer underrun would.
  std::uint64_t garbage = 0x4141414141414141ULL;
  std::memcpy(static_cast<char*>(blocks[11]) - 8, &garbage, 8);
  auto bad = shmkit::testing::run_tool({"verify", name.name()});
  EXPECT_NE(bad.exit_code, 0) << bad.out << bad.err;
  EXPECT_NE((bad.out + bad.err).find("header"), std::string::npos) << bad.out << bad.err;
  EXPECT_FALSE(heap.verify().empty());
  EXPECT_EQ(heap.deallocate(blocks[11]), HeapStatus::foreign_pointer);
  Heap::detach(seg);
}

// Issue 14 item 7, "An interior pointer is freed and handed out again": data stored inside a live
// block that looks like a chunk header — the 16 bytes a header holds, with check bits computed from
// the offset as the heap's public formula used to, or a copy of a real header — must not make the
// pointer after it a block. deallocate refuses it, the live block is never handed out again, and
// the heap stays consistent.
std::uint64_t offset_only_check_bits(std::uint64_t off) {  // the formula the check bits used to be
  return (((off >> 4) * 0x9E3779B97F4A7C15ULL) >> 52) << 52;
}

TEST(HeapErrors, InteriorPointerWithForgedHeaderIsRefusedAndNotHandedOutAgain) {
  auto seg = Segment::create_anonymous(4 << 20);
  Heap& heap = Heap::attach(seg);
  constexpr std::uint64_t kUsed = 2;
  for (std::size_t live_size : {512u, 1000u, 8192u}) {
    auto* live = static_cast<std::byte*>(heap.allocate(live_size));
    auto* other = static_cast<std::byte*>(heap.allocate(48));
    ASSERT_NE(live, nullptr);
    ASSERT_NE(other, nullptr);
    for (std::size_t at = 64; at + 64 <= live_size; at += 160) {
      std::byte* interior = live + at;
      const std::uint64_t ch = seg.offset_of(interior) - 16;
      for (std::uint64_t fake_size : {32u, 48u, 64u}) {
        // A forged header: boundary tag 0, then size | used | the offset's check bits.
        std::uint64_t forged[2] = {0, offset_only_check_bits(ch) | fake_size | kUsed};
        std::memcpy(interior - 16, forged, sizeof forged);
        EXPECT_EQ(heap.deallocate(interior), HeapStatus::foreign_pointer)
            << "forged header at " << at << " bytes into a " << live_size << "-byte block, size " << fake_size;
        EXPECT_EQ(heap.usable_size(interior), 0u);
      }
      // A copy of a real header (the 16 bytes before another live block).
      std::memcpy(interior - 16, other - 16, 16);
      EXPECT_EQ(heap.deallocate(interior), HeapStatus::foreign_pointer) << "copied header at " << at;
    }
    // Nothing handed out lies inside the live block.
    std::vector<void*> got;
    for (int i = 0; i < 200; ++i) {
      auto* p = static_cast<std::byte*>(heap.allocate(16 + static_cast<std::size_t>(i % 4) * 16));
      ASSERT_NE(p, nullptr);
      EXPECT_FALSE(p >= live && p < live + live_size) << "a block was handed out inside a live block";
      got.push_back(p);
    }
    for (void* p : got) EXPECT_EQ(heap.deallocate(p), HeapStatus::ok);
    EXPECT_EQ(heap.deallocate(live), HeapStatus::ok);
    EXPECT_EQ(heap.deallocate(other), HeapStatus::ok);
    auto f = heap.verify();
    EXPECT_TRUE(f.empty()) << f.front().message;
  }
  Heap::detach(seg);
}

}  // namespace

