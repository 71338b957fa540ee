// Tests the heap side of the `shmkit` command: `info` shows heap figures and named objects of a
// segment another process filled; `verify` exits 0 on a healthy heap and 3, with findings, on one
// whose block headers were damaged.
#include <gtest/gtest.h>

#include <cstring>

#include "shmkit/heap/heap.hpp"
#include "shmkit/shm/segment.hpp"
#include "testing.hpp"

using namespace shmkit;
using shmkit::testing::Child;
using shmkit::testing::run_tool;
using shmkit::testing::ShmNameGuard;
using shmkit::testing::unique_name;

TEST(ShmkitHeapCommand, InfoShowsHeapFiguresAndNames) {
  ShmNameGuard n(unique_name("cli-heap"));
  Child filler([&] {
    Segment seg = Segment::create(n.name(), 8 << 20);
    Heap& heap = Heap::attach(seg);
    for (int i = 0; i < 100; ++i)
      if (heap.allocate(100) == nullptr) return 1;
    heap.find_or_construct<long>("answer", 42L);
    Heap::detach(seg);
    return 0;
  });
  ASSERT_EQ(filler.wait(), 0);
  auto info = run_tool({"info", n.name(), "--json"});
  ASSERT_EQ(info.exit_code, 0) << info.err;
  EXPECT_NE(info.out.find("\"heap\":{"), std::string::npos) << info.out;
  EXPECT_NE(info.out.find("\"blocks_in_use\":"), std::string::npos) << info.out;
  EXPECT_NE(info.out.find("\"named_objects\":[\"answer\"]"), std::string::npos) << info.out;
  auto text = run_tool({"info", n.name()});
  EXPECT_NE(text.out.find("bytes_in_use"), std::string::npos) << text.out;
  auto ok = run_tool({"verify", n.name()});
  EXPECT_EQ(ok.exit_code, 0) << ok.out << ok.err;
}

TEST(ShmkitHeapCommand, VerifyReportsDamagedHeap) {
  ShmNameGuard n(unique_name("cli-damage"));
  Segment seg = Segment::create(n.name(), 8 << 20);
  Heap& heap = Heap::attach(seg);
  std::vector<void*> blocks;
  for (int i = 0; i < 50; ++i) blocks.push_back(heap.allocate(2000));  // large: arena chunks
  for (int i = 0; i < 50; i += 2) ASSERT_EQ(heap.deallocate(blocks[i]), HeapStatus::ok);
  ASSERT_EQ(run_tool({"verify", n.name()}).exit_code, 0);
  // Damage: overwrite the 16-byte chunk headers in front of a few live blocks.
  for (int i = 1; i < 10; i += 2) std::memset(static_cast<char*>(blocks[i]) - 16, 0xA5, 16);
  auto bad = run_tool({"verify", n.name()});
  EXPECT_EQ(bad.exit_code, 3) << bad.out << bad.err;
  EXPECT_NE(bad.out.find("heap at offset"), std::string::npos) << bad.out;
  EXPECT_NE(bad.err.find("finding"), std::string::npos) << bad.err;
  Heap::detach(seg);
}
