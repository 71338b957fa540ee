// Tests C++ containers living in the segment: std::map / vector / basic_string / unordered_map
// with shmkit::Allocator built by one process, then read and changed by a forked process and by
// exec'd processes that open the segment by name (the README usage: open_or_create, a map and a
// Lock found or constructed by name, from every process); Boost.Interprocess containers with
// OffsetAllocator in a process whose mapping had to relocate; and the pmr memory_resource.
#include <gtest/gtest.h>
#include <sys/mman.h>

#include <boost/interprocess/containers/map.hpp>
#include <boost/interprocess/containers/vector.hpp>
#include <cstring>
#include <functional>
#include <map>
#include <memory_resource>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "shmkit/heap/allocator.hpp"
#include "shmkit/heap/heap.hpp"
#include "shmkit/locks/lock.hpp"
#include "shmkit/shm/segment.hpp"
#include "shmkit/sys/syscall.hpp"
#include "testing.hpp"

namespace {

using shmkit::Allocator;
using shmkit::Heap;
using shmkit::Segment;

struct Order {
  int qty;
  double price;
};
using OrderMap = std::map<int, Order, std::less<>, Allocator<std::pair<const int, Order>>>;
using ShmString = std::basic_string<char, std::char_traits<char>, Allocator<char>>;
using ShmVector = std::vector<ShmString, Allocator<ShmString>>;
using ShmHash = std::unordered_map<int, int, std::hash<int>, std::equal_to<int>, Allocator<std::pair<const int, int>>>;

// The README usage, from any process.
int add_orders(const std::string& name, int first, int count) {
  auto seg = Segment::open_or_create(name, 64 << 20);
  Heap& heap = Heap::attach(seg);
  auto* orders = heap.find_or_construct<OrderMap>("orders", Allocator<std::pair<const int, Order>>(heap));
  auto* lock = heap.find_or_construct<shmkit::Lock>("orders.lock");
  for (int i = first; i < first + count; ++i) {
    std::lock_guard g(*lock);
    (*orders)[i] = Order{i, i * 0.5};
  }
  Heap::detach(seg);
  return 0;
}

SHMKIT_TEST_HELPER(heap_add_orders) { return add_orders(args.at(0), std::stoi(args.at(1)), std::stoi(args.at(2))); }

// Opens by name, checks what the creator wrote, changes it.
SHMKIT_TEST_HELPER(heap_check_and_change) {
  auto seg = Segment::open(args.at(0));
  Heap& heap = Heap::attach(seg);
  auto* v = heap.find<ShmVector>("strings");
  auto* h = heap.find<ShmHash>("squares");
  if (v == nullptr || h == nullptr) return 10;
  if (v->size() != 101 || std::string_view((*v)[100]) != "added by a forked process") return 11;
  for (int i = 0; i < 100; ++i)
    if (std::string_view((*v)[static_cast<std::size_t>(i)]) != "string number " + std::to_string(i) + " long enough to be on the heap") return 12;
  for (int i = 0; i < 500; ++i)
    if (h->at(i) != i * i) return 13;
  v->emplace_back("added by an exec'd process", v->get_allocator());
  for (int i = 500; i < 1000; ++i) (*h)[i] = i * i;
  h->erase(0);
  Heap::detach(seg);
  return 0;
}

// A relocated process: its mapping is elsewhere; Boost containers with OffsetAllocator work.
SHMKIT_TEST_HELPER(heap_relocated) {
  using IVec = boost::interprocess::vector<int, shmkit::OffsetAllocator<int>>;
  {
    // Occupy the segment's home so the mapping must go elsewhere.
    auto probe = Segment::open(args.at(0), {.relocate = shmkit::Relocate::allowed});
    std::uintptr_t home = probe.home();
    probe.close();
    void* blocker = nullptr;
    if (shmkit::sys::mmap(&blocker, reinterpret_cast<void*>(home), 1 << 20, PROT_NONE,
                          MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0) != 0)
      return 20;
  }
  auto seg = Segment::open(args.at(0), {.relocate = shmkit::Relocate::allowed});
  if (seg.at_home()) return 21;
  Heap& heap = Heap::attach(seg);
  auto* v = heap.find<IVec>("ivec");
  if (v == nullptr) return 22;
  if (v->size() != 1000) return 23;
  for (int i = 0; i < 1000; ++i)
    if ((*v)[static_cast<std::size_t>(i)] != i) return 24;
  for (int i = 1000; i < 5000; ++i) v->push_back(i);  // reallocates inside the relocated mapping
  if (!heap.verify().empty()) return 25;
  Heap::detach(seg);
  return 0;
}

TEST(HeapContainers, BuiltByOneProcessReadAndChangedByForkedAndExecdProcesses) {
  shmkit::testing::ShmNameGuard name(shmkit::testing::unique_name("heapcont"));
  auto seg = Segment::create(name.name(), 16 << 20);
  Heap& heap = Heap::attach(seg);
  Allocator<char> alloc(heap);
  auto* v = heap.find_or_construct<ShmVector>("strings", alloc);
  auto* h = heap.find_or_construct<ShmHash>("squares", alloc);
  for (int i = 0; i < 100; ++i) v->emplace_back("string number " + std::to_string(i) + " long enough to be on the heap", alloc);
  for (int i = 0; i < 500; ++i) (*h)[i] = i * i;
  // a forked process changes them too
  shmkit::testing::Child child([&] {
    Heap& hh = Heap::attach(seg);
    auto* vv = hh.find<ShmVector>("strings");
    if (vv != v) return 30;
    vv->emplace_back("added by a forked process", vv->get_allocator());
    return 0;
  });
  ASSERT_EQ(child.wait(), 0);
  auto helper = shmkit::testing::spawn_helper("heap_check_and_change", {name.name()});
  ASSERT_EQ(helper.wait(), 0);
  ASSERT_EQ(v->size(), 102u);
  EXPECT_EQ(std::string_view(v->back()), "added by an exec'd process");
  EXPECT_EQ(h->size(), 999u);
  EXPECT_EQ(h->count(0), 0u);
  for (int i = 1; i < 1000; ++i) ASSERT_EQ(h->at(i), i * i);
  EXPECT_TRUE(heap.verify().empty());
  EXPECT_TRUE(heap.destroy<ShmVector>("strings"));
  EXPECT_TRUE(heap.destroy<ShmHash>("squares"));
  heap.reclaim_dead();
  auto f = heap.verify();
  EXPECT_TRUE(f.empty()) << f.front().message;
  // Everything the containers allocated, in three processes, was freed by the destructors (the
  // directory table is the one block left).
  EXPECT_EQ(heap.stats().blocks_in_use, 1u);
  Heap::detach(seg);
}

TEST(HeapContainers, ReadmeUsageFromSeveralExecdProcessesAtOnce) {
  shmkit::testing::ShmNameGuard name(shmkit::testing::unique_name("orders"));
  std::vector<shmkit::testing::Child> kids;
  for (int p = 0; p < 4; ++p)
    kids.push_back(shmkit::testing::spawn_helper("heap_add_orders", {name.name(), std::to_string(p * 1000), "1000"}));
  for (auto& k : kids) ASSERT_EQ(k.wait(), 0);
  auto seg = Segment::open(name.name());
  Heap& heap = Heap::attach(seg);
  auto* orders = heap.find<OrderMap>("orders");
  ASSERT_NE(orders, nullptr);
  ASSERT_EQ(orders->size(), 4000u);
  for (int i = 0; i < 4000; ++i) ASSERT_EQ(orders->at(i).qty, i);
  EXPECT_EQ(heap.names().size(), 2u);
  EXPECT_TRUE(heap.verify().empty());
  Heap::detach(seg);
}

TEST(HeapContainers, BoostContainersWithOffsetAllocatorInARelocatedProcess) {
  using IVec = boost::interprocess::vector<int, shmkit::OffsetAllocator<int>>;
  shmkit::testing::ShmNameGuard name(shmkit::testing::unique_name("reloc"));
  auto seg = Segment::create(name.name(), 16 << 20);
  Heap& heap = Heap::attach(seg);
  auto* v = heap.find_or_construct<IVec>("ivec", shmkit::OffsetAllocator<int>(heap));
  for (int i = 0; i < 1000; ++i) v->push_back(i);
  auto helper = shmkit::testing::spawn_helper("heap_relocated", {name.name()});
  ASSERT_EQ(helper.wait(), 0);
  ASSERT_EQ(v->size(), 5000u);
  for (int i = 0; i < 5000; ++i) ASSERT_EQ((*v)[static_cast<std::size_t>(i)], i);
  EXPECT_TRUE(heap.verify().empty());
  Heap::detach(seg);
}

TEST(HeapContainers, PmrMemoryResource) {
  auto seg = Segment::create_anonymous(8 << 20);
  Heap& heap = Heap::attach(seg);
  shmkit::HeapResource res(heap);
  {
    std::pmr::vector<std::pmr::string> v(&res);
    for (int i = 0; i < 1000; ++i) v.emplace_back("a pmr string long enough to allocate #" + std::to_string(i));
    ASSERT_TRUE(seg.contains(v.data()));
    ASSERT_TRUE(seg.contains(v[999].data()));
    EXPECT_GT(heap.stats().blocks_in_use, 1000u);
  }
  EXPECT_EQ(heap.stats().blocks_in_use, 0u);
  EXPECT_TRUE(res.is_equal(res));
  EXPECT_TRUE(heap.verify().empty());
  Heap::detach(seg);
}

}  // namespace
