// Tests what happens when the segment's home address is already occupied in the opening process:
// by default a clear error naming the occupant, with Relocate::allowed a mapping elsewhere that
// reports at_home() == false and still translates offsets and OffsetPtrs correctly.
#include <gtest/gtest.h>
#include <sys/mman.h>

#include "shmkit/shm/offset_ptr.hpp"
#include "shmkit/shm/segment.hpp"
#include "shmkit/sys/error.hpp"
#include "testing.hpp"

using namespace shmkit;
using shmkit::testing::Child;
using shmkit::testing::ShmNameGuard;
using shmkit::testing::unique_name;

namespace {
constexpr std::size_t kOff = SegmentHeader::kDataOffset;

struct Node {
  int value;
  OffsetPtr<Node> next;
};
}  // namespace

TEST(AddressConflict, OccupiedBaseIsAnErrorNamingTheOccupant) {
  ShmNameGuard name(unique_name("conflict"));
  Segment seg = Segment::create(name.name(), 1 << 20);
  std::uintptr_t home = seg.home();
  Child c([&] {
    seg.close();  // drop the inherited mapping, then put something else at the home address
    void* p = ::mmap(reinterpret_cast<void*>(home + 4096), 4096, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
    if (p == MAP_FAILED) return 10;
    try {
      (void)Segment::open(name.name());
      return 1;
    } catch (const Error& e) {
      std::string msg = e.what();
      if (e.code() != Errc::address_in_use) return 2;
      if (msg.find("Relocate::allowed") == std::string::npos) return 3;
      char range[64];
      std::snprintf(range, sizeof range, "%lx", static_cast<unsigned long>(home + 4096));
      if (msg.find(range) == std::string::npos) return 4;  // names the occupying mapping
      return 0;
    }
  });
  EXPECT_EQ(c.wait(), 0);
}

TEST(AddressConflict, RelocatedMappingTranslatesOffsetsAndOffsetPtrs) {
  ShmNameGuard name(unique_name("reloc"));
  Segment seg = Segment::create(name.name(), 1 << 20);
  auto* a = seg.at<Node>(kOff);
  auto* b = seg.at<Node>(kOff + 64);
  a->value = 1;
  b->value = 2;
  a->next = b;
  b->next = nullptr;
  std::uint64_t off_b = seg.offset_of(b);
  std::uintptr_t home = seg.home();
  Child c([&] {
    seg.close();
    void* p = ::mmap(reinterpret_cast<void*>(home), 4096, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
    if (p == MAP_FAILED) return 10;
    SegmentOptions o;
    o.relocate = Relocate::allowed;
    Segment s2 = Segment::open(name.name(), o);
    if (s2.at_home()) return 1;
    if (s2.home() != home) return 2;
    auto* a2 = s2.at<Node>(kOff);
    if (a2->value != 1 || !a2->next || a2->next->value != 2) return 3;  // OffsetPtr still valid
    if (s2.offset_of(a2->next.get()) != off_b) return 4;
    if (s2.from_home(reinterpret_cast<std::uintptr_t>(b)) != a2->next.get()) return 5;
    if (a2->next->next) return 6;
    a2->next->value = 20;
    return 0;
  });
  EXPECT_EQ(c.wait(), 0);
  EXPECT_EQ(b->value, 20);
}

TEST(AddressConflict, ContainsAndPointerAtCheckBounds) {
  Segment seg = Segment::create_anonymous(1 << 20);
  EXPECT_TRUE(seg.contains(seg.base()));
  EXPECT_TRUE(seg.contains(seg.base() + seg.size() - 8, 8));
  EXPECT_FALSE(seg.contains(seg.base() + seg.size() - 4, 8));
  EXPECT_FALSE(seg.contains(seg.base() + seg.size()));
  EXPECT_FALSE(seg.contains(seg.base() - 1));
  EXPECT_EQ(seg.pointer_at(seg.size()), nullptr);
  EXPECT_EQ(seg.pointer_at(~0ULL, 2), nullptr);
  EXPECT_EQ(seg.pointer_at(seg.size() - 8, 16), nullptr);
  EXPECT_EQ(seg.pointer_at(100), seg.base() + 100);
}
