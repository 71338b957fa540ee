// Tests WaitSet: one thread waits on subscribers of two topics; a publisher in another process
// publishes to one or the other at random moments, and wait() returns the index of the one that
// has data, woken by the publish (median latency well under EventCount's 50 ms re-check slice, so
// it is the notify that wakes it, not the slice); with nothing published wait() times out empty;
// a subscriber of another segment is refused.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

#include "shmkit/channels/waitset.hpp"
#include "shmkit/shm/segment.hpp"
#include "testing.hpp"

using namespace shmkit;
using namespace std::chrono_literals;

namespace {

struct Stamp {
  std::int64_t sent_ns;
  std::uint32_t round;
};
std::int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch()).count();
}

TEST(PubSubWaitSet, WakesOnAPublishToAnyAttachedTopic) {
  Segment seg = Segment::create_anonymous(16 << 20);
  Heap& heap = Heap::attach(seg);
  Subscriber<Stamp> a(heap, "a"), b(heap, "b");
  WaitSet ws(heap);
  EXPECT_EQ(ws.attach(a), 0u);
  EXPECT_EQ(ws.attach(b), 1u);
  auto t0 = Clock::now();
  EXPECT_TRUE(ws.wait(Clock::now() + 30ms).empty());
  EXPECT_GE(Clock::now() - t0, 25ms);
  constexpr std::uint32_t kRounds = 20;
  shmkit::testing::SharedMem shm(4096);
  auto* acked = reinterpret_cast<std::atomic<std::uint32_t>*>(shm.base);
  shmkit::testing::Child pub([&]() -> int {
    Publisher<Stamp> pa(heap, "a"), pb(heap, "b");
    for (std::uint32_t r = 0; r < kRounds; ++r) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5 + (r * 7) % 20));
      auto& p = r % 3 == 0 ? pa : pb;
      if (p.publish(p.loan(Stamp{now_ns(), r})) != PubSubStatus::ok) return 2;
      const auto until = Clock::now() + 10s;
      while (acked->load() <= r)
        if (Clock::now() > until) return 3;
    }
    return 0;
  });
  std::vector<std::int64_t> latency;
  for (std::uint32_t r = 0; r < kRounds; ++r) {
    std::vector<std::size_t> ready = ws.wait(Clock::now() + 10s);
    const std::int64_t woke = now_ns();
    ASSERT_EQ(ready.size(), 1u) << "round " << r;
    EXPECT_EQ(ready[0], r % 3 == 0 ? 0u : 1u) << "round " << r;
    Sample<Stamp> s = ready[0] == 0 ? a.try_take() : b.try_take();
    ASSERT_TRUE(s);
    EXPECT_EQ(s->round, r);
    latency.push_back(woke - s->sent_ns);
    acked->store(r + 1);
  }
  EXPECT_EQ(pub.wait(), 0);
  std::sort(latency.begin(), latency.end());
  EXPECT_LT(latency[kRounds / 2], 10'000'000) << "median wake-up latency (ns): woken by the slice, not the notify?";
}

TEST(PubSubWaitSet, RefusesASubscriberOfAnotherSegment) {
  Segment s1 = Segment::create_anonymous(8 << 20), s2 = Segment::create_anonymous(8 << 20);
  Heap& h1 = Heap::attach(s1);
  Heap& h2 = Heap::attach(s2);
  BytesSubscriber other(h2, "x");
  WaitSet ws(h1);
  EXPECT_THROW(ws.attach(other), Error);
}

}  // namespace
