// Tests growth without remapping: a segment grown by one process shows the new bytes at once in
// another attached process at the same addresses; growth stops at capacity with an error; many
// processes growing at once agree on the size.
#include <gtest/gtest.h>

#include "shmkit/shm/segment.hpp"
#include "shmkit/sys/error.hpp"
#include "testing.hpp"

using namespace shmkit;
using shmkit::testing::Child;
using shmkit::testing::ShmNameGuard;
using shmkit::testing::unique_name;

TEST(Growth, OtherProcessSeesNewBytesWithoutRemapping) {
  ShmNameGuard name(unique_name("grow"));
  SegmentOptions o;
  o.capacity = 64 << 20;
  Segment seg = Segment::create(name.name(), 1 << 20, o);
  std::size_t before = seg.size();
  auto* flag = seg.at<std::atomic<int>>(SegmentHeader::kDataOffset);
  std::byte* base = seg.base();
  Child c([&] {
    Segment s2 = Segment::open(name.name());
    if (s2.base() != base) return 1;
    flag->store(1);
    while (flag->load() != 2) ::usleep(100);
    // The parent grew the segment: the new bytes are readable here, at the same address, with no
    // remap (s2 was mapped before the growth).
    if (s2.size() != 8u << 20) return 2;
    auto* far = static_cast<std::uint64_t*>(s2.pointer_at((8u << 20) - 8, 8));
    if (far == nullptr || *far != 0xfeedULL) return 3;
    *far = 0xbeefULL;
    return 0;
  });
  while (flag->load() != 1) ::usleep(100);
  EXPECT_EQ(seg.pointer_at((8u << 20) - 8, 8), nullptr);  // not yet backed: refused, no SIGBUS
  seg.grow(8 << 20);
  EXPECT_GT(seg.size(), before);
  auto* far = static_cast<std::uint64_t*>(seg.pointer_at((8u << 20) - 8, 8));
  ASSERT_NE(far, nullptr);
  *far = 0xfeedULL;
  flag->store(2);
  EXPECT_EQ(c.wait(), 0);
  EXPECT_EQ(*far, 0xbeefULL);
}

TEST(Growth, StopsAtCapacity) {
  SegmentOptions o;
  o.capacity = 4 << 20;
  Segment seg = Segment::create_anonymous(1 << 20, o);
  EXPECT_EQ(seg.try_grow(4 << 20), 0);
  EXPECT_EQ(seg.try_grow((4 << 20) + 1), -ENOMEM);
  try {
    seg.grow(5 << 20);
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::out_of_memory);
    EXPECT_NE(std::string(e.what()).find("capacity"), std::string::npos);
  }
  EXPECT_EQ(seg.size(), 4u << 20);
}

TEST(Growth, ConcurrentGrowersAgree) {
  ShmNameGuard name(unique_name("grow-race"));
  SegmentOptions o;
  o.capacity = 256 << 20;
  Segment seg = Segment::create(name.name(), 1 << 20, o);
  std::vector<Child> kids;
  for (int i = 0; i < 4; ++i)
    kids.emplace_back([&, i] {
      Segment s2 = Segment::open(name.name());
      for (int k = 1; k <= 50; ++k) {
        std::size_t want = static_cast<std::size_t>(k * 4 + i) << 20;
        if (s2.try_grow(want) != 0) return 1;
        if (s2.size() < want) return 2;
        *static_cast<volatile char*>(s2.pointer_at(want - 1)) = 1;  // touch the last new byte
      }
      return 0;
    });
  for (auto& k : kids) EXPECT_EQ(k.wait(), 0);
  EXPECT_EQ(seg.size(), std::size_t{203} << 20);
}
