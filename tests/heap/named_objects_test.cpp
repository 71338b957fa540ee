// Tests named objects: find_or_construct with constructor arguments, find, destroy; a lookup with
// the wrong type (size or type identity) is an error; several processes racing to construct the
// same names end with exactly one object per name (one constructor run); a process SIGKILLed in
// the middle of a constructor leaves no half-built object and no lost block; a named object that
// does not fit (or that a thread finding every cache slot taken asks for) after another process
// constructed one and exited throws out_of_memory or succeeds, never aborts.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mman.h>

#include <atomic>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "../../heap/src/layout.hpp"
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



// Issue 14 item 11, "A named object that does not fit aborts the process": the failed allocation
// inside find_or_construct (which holds the directory lock) runs reclaim_dead, which must not take
// that lock a second time. A process that constructed a named object and exited leaves a dead
// owner entry, which is what makes reclaim_dead reach for the directory lock. Both paths: an
// object larger than the segment's capacity, and a small one asked for by a thread that finds every
// cache slot taken. Run in a child, so that the abort of the unfixed heap is a failed exit status.
struct TooBig {
  char bytes[8 << 20];  // larger than the segment's capacity below
};

void leave_a_dead_owner(Segment& seg) {
  shmkit::testing::Child early([&] {
    (void)Heap::attach(seg).find_or_construct<int>("early", 7);
    return 0;
  });
  ASSERT_EQ(early.wait(), 0);
}

TEST_F(NamedObjects, NamedObjectThatDoesNotFitThrowsOutOfMemory) {
  shmkit::SegmentOptions o;
  o.capacity = std::size_t{4} << 20;
  auto seg = Segment::create_anonymous(std::size_t{1} << 20, o);
  leave_a_dead_owner(seg);
  shmkit::testing::Child user([&] {
    Heap& heap = Heap::attach(seg);
    try {
      (void)heap.find_or_construct<TooBig>("too big");
      return 1;  // it cannot fit
    } catch (const shmkit::Error& e) {
      if (e.code() != shmkit::Errc::out_of_memory) return 2;
    }
    // The heap is still usable and consistent after the refusal.
    if (*heap.find_or_construct<int>("early", 0) != 7) return 3;
    return heap.verify().empty() ? 0 : 4;
  });
  EXPECT_EQ(user.wait(), 0) << "0 = out_of_memory thrown; -6 = aborted (directory lock taken twice)";
}

TEST_F(NamedObjects, NamedObjectAskedForWhenEveryCacheSlotIsTakenDoesNotAbort) {
  auto seg = Segment::create_anonymous(std::size_t{8} << 20);
  leave_a_dead_owner(seg);
  shmkit::testing::Child user([&] {
    Heap& heap = Heap::attach(seg);
    // Every free cache slot claimed by a live thread of this process (one allocation each), so the
    // next new thread finds none and runs reclaim_dead from inside find_or_construct. (A slot the
    // exited process may still hold is left to that reclaim: claiming it here would run
    // reclaim_dead early and clear the dead owner entry.)
    const auto* ctl = seg.at<shmkit::heapimpl::ControlBlock>(seg.header().root(shmkit::RootSlot::heap).load());
    int free_slots = 0;
    for (const auto& slot : ctl->caches) free_slots += slot.owner.load() == 0 ? 1 : 0;
    std::atomic<int> claimed{0}, release{0};
    std::vector<std::thread> holders;
    for (int i = 0; i < free_slots; ++i)
      holders.emplace_back([&] {
        void* p = heap.allocate(16);
        claimed.fetch_add(1);
        while (release.load() == 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
        (void)heap.deallocate(p);
      });
    while (claimed.load() < free_slots) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    int rc = 0;
    std::thread asker([&] {
      try {
        int* x = heap.find_or_construct<int>("late", 5);
        rc = (x != nullptr && *x == 5) ? 0 : 1;
      } catch (const shmkit::Error& e) {
        rc = e.code() == shmkit::Errc::out_of_memory ? 0 : 2;
      }
    });
    asker.join();
    release.store(1);
    for (auto& t : holders) t.join();
    return rc != 0 ? rc : (heap.verify().empty() ? 0 : 4);
  });
  EXPECT_EQ(user.wait(), 0) << "-6 = aborted (directory lock taken twice)";
}

}  // namespace
