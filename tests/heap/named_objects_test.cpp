// Tests named objects: find_or_construct with constructor arguments, find, destroy; a lookup with
// the wrong type (size or type identity) is an error; several processes racing to construct the
// same names end with exactly one object per name (one constructor run); a process SIGKILLed in
// the middle of a constructor leaves no half-built object and no lost block.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mman.h>

#include <atomic>
#include <cstring>
#include <string>
#include <thread>

#include "shmkit/heap/heap.hpp"
#include "shmkit/shm/segment.hpp"
#include "shmkit/sys/error.hpp"
#include "shmkit/sys/syscall.hpp"
#include "testing.hpp"

namespace {

using shmkit::Heap;
using shmkit::Segment;

struct Counters {  // outside the heap: a MAP_SHARED page shared by forked children
  std::atomic<int> constructions;
  std::atomic<int> start;
  std::atomic<int> ready;
};

Counters* g_counters = nullptr;

struct Widget {
  int a;
  long b;
  char tag[32];
  std::atomic<int> users{0};
  Widget(int x, long y, const char* t) : a(x), b(y) {
    g_counters->constructions.fetch_add(1);
    std::strncpy(tag, t, sizeof tag - 1);
    tag[sizeof tag - 1] = '\0';
  }
};
struct OtherSameSize {
  int a;
  long b;
  char tag[32];
  std::atomic<int> users{0};
};
static_assert(sizeof(Widget) == sizeof(OtherSameSize));

struct Dying {
  char payload[200];
  explicit Dying(bool die) {
    std::memset(payload, 0x77, sizeof payload);
    if (die) ::raise(SIGKILL);  // dies inside the constructor, holding the directory lock
  }
};

class NamedObjects : public ::testing::Test {
 protected:
  void SetUp() override {
    void* mem = nullptr;
    ASSERT_EQ(shmkit::sys::mmap(&mem, nullptr, sizeof(Counters), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0), 0);
    g_counters = new (mem) Counters{};
  }
  void TearDown() override { (void)shmkit::sys::munmap(g_counters, sizeof(Counters)); }
};

TEST_F(NamedObjects, FindOrConstructFindDestroyAndWrongType) {
  auto seg = Segment::create_anonymous(4 << 20);
  Heap& heap = Heap::attach(seg);
  EXPECT_EQ(heap.find<Widget>("w"), nullptr);
  Widget* w = heap.find_or_construct<Widget>("w", 7, 8L, "seven");
  ASSERT_NE(w, nullptr);
  EXPECT_TRUE(seg.contains(w, sizeof *w));
  EXPECT_EQ(w->a, 7);
  EXPECT_STREQ(w->tag, "seven");
  EXPECT_EQ(heap.find_or_construct<Widget>("w", 1, 2L, "other"), w) << "found, not constructed again";
  EXPECT_EQ(heap.find<Widget>("w"), w);
  EXPECT_EQ(g_counters->constructions.load(), 1);
  // Wrong type: same size, other type identity; and another size.
  try {
    (void)heap.find<OtherSameSize>("w");
    ADD_FAILURE() << "a lookup with the wrong type must throw";
  } catch (const shmkit::Error& e) {
    EXPECT_EQ(e.code(), shmkit::Errc::invalid_argument);
    EXPECT_NE(std::string(e.what()).find("another type"), std::string::npos) << e.what();
  }
  EXPECT_THROW((void)heap.find<int>("w"), shmkit::Error);
  EXPECT_THROW((void)heap.destroy<int>("w"), shmkit::Error);
  EXPECT_THROW((void)heap.find<int>(std::string(200, 'x')), shmkit::Error);
  // Many names: the directory grows.
  for (int i = 0; i < 100; ++i) ASSERT_NE(heap.find_or_construct<long>("n" + std::to_string(i), i), nullptr);
  for (int i = 0; i < 100; ++i) ASSERT_EQ(*heap.find<long>("n" + std::to_string(i)), i);
  EXPECT_EQ(heap.names().size(), 101u);
  EXPECT_TRUE(heap.destroy<Widget>("w"));
  EXPECT_FALSE(heap.destroy<Widget>("w"));
  EXPECT_EQ(heap.find<Widget>("w"), nullptr);
  for (int i = 0; i < 100; ++i) ASSERT_TRUE(heap.destroy<long>("n" + std::to_string(i)));
  EXPECT_TRUE(heap.names().empty());
  EXPECT_TRUE(heap.verify().empty());
  EXPECT_EQ(heap.stats().blocks_in_use, 1u);  // the directory table
  Heap::detach(seg);
}

TEST_F(NamedObjects, ProcessesRacingToConstructTheSameNamesEndWithOneObjectEach) {
  auto seg = Segment::create_anonymous(8 << 20);
  Heap& heap = Heap::attach(seg);
  constexpr int kProcs = 6, kNames = 40;
  std::vector<shmkit::testing::Child> kids;
  for (int p = 0; p < kProcs; ++p) {
    kids.emplace_back([&seg, p] {
      Heap& h = Heap::attach(seg);
      g_counters->ready.fetch_add(1);
      while (g_counters->start.load() == 0) std::this_thread::yield();
      for (int i = 0; i < kNames; ++i) {
        Widget* w = h.find_or_construct<Widget>("race" + std::to_string(i), i, static_cast<long>(p), "racer");
        if (w == nullptr || w->a != i) return 1;
        w->users.fetch_add(1);
      }
      return 0;
    });
  }
  while (g_counters->ready.load() < kProcs) std::this_thread::yield();
  g_counters->start.store(1);
  for (auto& k : kids) ASSERT_EQ(k.wait(), 0);
  EXPECT_EQ(g_counters->constructions.load(), kNames) << "each name constructed exactly once";
  for (int i = 0; i < kNames; ++i) {
    Widget* w = heap.find<Widget>("race" + std::to_string(i));
    ASSERT_NE(w, nullptr);
    EXPECT_EQ(w->users.load(), kProcs) << "every process got the same object";
  }
  EXPECT_EQ(heap.names().size(), static_cast<std::size_t>(kNames));
  heap.reclaim_dead();
  EXPECT_TRUE(heap.verify().empty());
  Heap::detach(seg);
}

TEST_F(NamedObjects, ProcessKilledInsideAConstructorLeavesNoHalfBuiltObject) {
  auto seg = Segment::create_anonymous(4 << 20);
  Heap& heap = Heap::attach(seg);
  std::uint64_t before = heap.stats().blocks_in_use;
  shmkit::testing::Child child([&seg] {
    Heap& h = Heap::attach(seg);
    (void)h.find_or_construct<Dying>("dying", true);
    return 0;
  });
  EXPECT_EQ(child.wait(), -SIGKILL);
  // The next user of the directory repairs it: no object under that name, construct works.
  EXPECT_EQ(heap.find<Dying>("dying"), nullptr);
  Dying* d = heap.find_or_construct<Dying>("dying", false);
  ASSERT_NE(d, nullptr);
  EXPECT_EQ(d->payload[0], 0x77);
  heap.reclaim_dead();
  auto st = heap.stats();
  EXPECT_GE(st.repairs, 1u);
  // the directory table (created by the child) + the new object: the half-built one was freed
  EXPECT_EQ(st.blocks_in_use, before + 2);
  EXPECT_EQ(st.bytes_owned, 0u);
  EXPECT_TRUE(heap.verify().empty());
  Heap::detach(seg);
}

}  // namespace
