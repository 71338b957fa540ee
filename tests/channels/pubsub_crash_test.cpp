// Tests each death of the publish/subscribe issue with real forked processes and SIGKILL, and that
// afterwards Topic::verify() and Heap::verify() find nothing and the topic's counters and the
// heap's block count show no leaked sample:
//  * a publisher killed holding loans (small, 4 KiB, 1 MiB): an explicit reclaim gives them back;
//  * a publisher killed inside publish (after disowning the block, inside the transaction, after
//    the commit with a drop's free pending): the next user of the topic repairs it — the sample is
//    either not delivered at all (before the commit) or delivered once (after it);
//  * a subscriber killed holding samples, and one killed inside take: the next publish reclaims
//    its references;
//  * a dead block_publisher subscriber never blocks a publisher, whether it died before the
//    publish or while the publisher was waiting on it;
//  * `shmkit rm --stale` reclaims a dead subscriber's samples in a segment still in use (and
//    `shmkit info` lists the topic with its publisher and subscriber and the queue depth).
#include <gtest/gtest.h>
#include <signal.h>

#include <atomic>
#include <cstring>
#include <chrono>
#include <thread>

#include "shmkit/channels/pubsub.hpp"
#include "shmkit/shm/segment.hpp"
#include "testing.hpp"

using namespace shmkit;
using namespace std::chrono_literals;
using shmkit::testing::Child;

namespace {

std::string findings(const std::vector<std::string>& f) {
  std::string s;
  for (auto& x : f) s += "  " + x + "\n";
  return s;
}

struct Flags {  // outside the heap
  std::atomic<int> ready{0};
};

class PubSubCrash : public ::testing::Test {
 protected:
  Segment seg = Segment::create_anonymous(64 << 20, {.capacity = std::size_t{1} << 30});
  Heap& heap = Heap::attach(seg);
  shmkit::testing::SharedMem flags_mem{4096};
  Flags* flags = ::new (flags_mem.base) Flags;
  std::uint64_t blocks() { return heap.stats().blocks_in_use; }
  void wait_ready(int n) {
    const auto until = Clock::now() + 20s;
    while (flags->ready.load() < n && Clock::now() < until) std::this_thread::sleep_for(1ms);
    ASSERT_GE(flags->ready.load(), n);
  }
  void expect_clean(Topic& topic, std::uint64_t base_blocks) {
    auto f = topic.verify();
    EXPECT_TRUE(f.empty()) << findings(f);
    TopicStats st = topic.stats();
    EXPECT_EQ(st.live_samples, 0u);
    for (auto& p : st.publishers) EXPECT_EQ(p.loans, 0u);
    EXPECT_EQ(blocks(), base_blocks) << "sample blocks leaked";
    auto hf = heap.verify();
    EXPECT_TRUE(hf.empty()) << hf.size() << " heap findings, first: " << (hf.empty() ? "" : hf[0].message);
  }
};

TEST_F(PubSubCrash, PublisherKilledHoldingLoansLosesOnlyThem) {
  Topic topic = Topic::open(heap, "t", {});
  const std::uint64_t base_blocks = blocks();
  Child c([&]() -> int {
    BytesPublisher pub(heap, "t");
    LoanedBytes a = pub.loan(16), b = pub.loan(4096), m = pub.loan(1 << 20);
    if (!a || !b || !m) return 2;
    std::memset(m.data(), 1, m.size());
    flags->ready = 1;
    for (;;) std::this_thread::sleep_for(1s);
  });
  wait_ready(1);
  EXPECT_EQ(topic.stats().publishers.at(0).loans, 3u);
  EXPECT_GT(blocks(), base_blocks);
  c.kill(SIGKILL);
  EXPECT_EQ(c.wait(), -SIGKILL);
  EXPECT_EQ(topic.reclaim(), 1u);  // explicit reclaim
  TopicStats st = topic.stats();
  EXPECT_EQ(st.reclaimed_publishers, 1u);
  EXPECT_EQ(st.reclaimed_loans, 3u);
  EXPECT_TRUE(st.publishers.empty());
  expect_clean(topic, base_blocks);
}

class PubSubCrashPoint : public PubSubCrash, public ::testing::WithParamInterface<int> {};

TEST_P(PubSubCrashPoint, PublisherKilledInsidePublishIsRepairedByTheNextUser) {
  const int point = GetParam();
  Topic topic = Topic::open(heap, "t", {});
  const std::uint64_t base_blocks = blocks();
  {
    BytesSubscriber sub(heap, "t", {}, {.queue_depth = 1});
    {
      BytesPublisher pub(heap, "t");
      LoanedBytes l = pub.loan(8);
      std::memcpy(l.data(), "first!!", 8);
      ASSERT_EQ(pub.publish(l), PubSubStatus::ok);
    }
    Child c([&]() -> int {
      BytesPublisher pub(heap, "t");
      LoanedBytes l = pub.loan(8);
      std::memcpy(l.data(), "second!", 8);
      pubsub_detail::test_kill_point = point;
      (void)pub.publish(l);
      return 2;  // not reached
    });
    EXPECT_EQ(c.wait(), -SIGKILL);
    // The subscriber is the next user of the topic lock: it repairs, then takes.
    SampleBytes s = sub.try_take();
    ASSERT_TRUE(s);
    if (point == 3) {
      EXPECT_EQ(std::memcmp(s.data(), "second!", 8), 0) << "a committed publish is delivered";
      EXPECT_EQ(s.seq(), 2u);
    } else {
      EXPECT_EQ(std::memcmp(s.data(), "first!!", 8), 0) << "an uncommitted publish is not delivered";
    }
    SampleBytes none = sub.try_take();
    EXPECT_FALSE(none) << "delivered twice";
    s.reset();
    (void)sub.flush();
    EXPECT_EQ(topic.reclaim(), 1u);  // the dead publisher's slot (and its loan, if any)
    TopicStats st = topic.stats();
    EXPECT_EQ(st.reclaimed_loans, point == 3 ? 0u : 1u);
  }
  expect_clean(topic, base_blocks);
}
INSTANTIATE_TEST_SUITE_P(Points, PubSubCrashPoint, ::testing::Values(1, 2, 3));

TEST_F(PubSubCrash, SubscriberKilledHoldingSamplesIsReclaimedByTheNextPublish) {
  Topic topic = Topic::open(heap, "t", {.history = 1});
  const std::uint64_t base_blocks = blocks();
  {
    BytesPublisher pub(heap, "t");
    Child c([&]() -> int {
      BytesSubscriber sub(heap, "t", {}, {.history = false});
      flags->ready = 1;
      SampleBytes a = sub.take(Clock::now() + 10s), b = sub.take(Clock::now() + 10s);
      if (!a || !b) return 2;
      flags->ready = 2;  // holds a and b, and c stays queued
      for (;;) std::this_thread::sleep_for(1s);
    });
    wait_ready(1);
    for (int i = 0; i < 3; ++i) ASSERT_EQ(pub.publish(pub.loan(1 << 16)), PubSubStatus::ok);
    wait_ready(2);
    TopicStats st = topic.stats();
    ASSERT_EQ(st.subscribers.size(), 1u);
    EXPECT_EQ(st.subscribers[0].held, 2u);
    EXPECT_EQ(st.subscribers[0].queued, 1u);
    EXPECT_EQ(st.live_samples, 3u);
    c.kill(SIGKILL);
    EXPECT_EQ(c.wait(), -SIGKILL);
    ASSERT_EQ(pub.publish(pub.loan(1 << 16)), PubSubStatus::ok);  // reclaims the dead subscriber
    st = topic.stats();
    EXPECT_EQ(st.reclaimed_subscribers, 1u);
    EXPECT_TRUE(st.subscribers.empty());
    EXPECT_EQ(st.live_samples, 1u);  // the history's one
  }
  // The history (K = 1) still holds the last sample, by design; nothing else is left.
  EXPECT_EQ(topic.stats().history_count, 1u);
  auto f = topic.verify();
  EXPECT_TRUE(f.empty()) << findings(f);
  EXPECT_EQ(blocks(), base_blocks + 1);  // exactly the history's sample
}

TEST_F(PubSubCrash, SubscriberKilledInsideTakeIsRolledBack) {
  Topic topic = Topic::open(heap, "t", {});
  const std::uint64_t base_blocks = blocks();
  {
    BytesPublisher pub(heap, "t");
    Child c([&]() -> int {
      BytesSubscriber sub(heap, "t");
      flags->ready = 1;
      while (!sub.has_data()) std::this_thread::sleep_for(1ms);
      pubsub_detail::test_kill_point = 4;
      (void)sub.try_take();
      return 2;
    });
    wait_ready(1);
    ASSERT_EQ(pub.publish(pub.loan(100)), PubSubStatus::ok);
    EXPECT_EQ(c.wait(), -SIGKILL);
    ASSERT_EQ(pub.publish(pub.loan(100)), PubSubStatus::ok);  // repairs the lock, reclaims the subscriber
    TopicStats st = topic.stats();
    EXPECT_EQ(st.reclaimed_subscribers, 1u);
  }
  expect_clean(topic, base_blocks);
}

TEST_F(PubSubCrash, DeadBlockingSubscriberNeverBlocksThePublisher) {
  Topic topic = Topic::open(heap, "t", {});
  const std::uint64_t base_blocks = blocks();
  {
    BytesPublisher pub(heap, "t");
    // Dead before the publish.
    Child c1([&]() -> int {
      BytesSubscriber sub(heap, "t", {}, {.policy = BackPressure::block_publisher, .queue_depth = 1});
      flags->ready = 1;
      for (;;) std::this_thread::sleep_for(1s);
    });
    wait_ready(1);
    ASSERT_EQ(pub.publish(pub.loan(10)), PubSubStatus::ok);  // fills its queue
    c1.kill(SIGKILL);
    EXPECT_EQ(c1.wait(), -SIGKILL);
    auto t0 = Clock::now();
    for (int i = 0; i < 20; ++i) ASSERT_EQ(pub.publish(pub.loan(10), Clock::now() + 5s), PubSubStatus::ok);
    EXPECT_LT(Clock::now() - t0, 1s);
    // Dying while the publisher waits on it.
    Child c2([&]() -> int {
      BytesSubscriber sub(heap, "t", {}, {.policy = BackPressure::block_publisher, .queue_depth = 1, .history = false});
      flags->ready = 2;
      for (;;) std::this_thread::sleep_for(1s);
    });
    wait_ready(2);
    ASSERT_EQ(pub.publish(pub.loan(10)), PubSubStatus::ok);  // fills it
    std::thread killer([&] {
      std::this_thread::sleep_for(100ms);
      c2.kill(SIGKILL);
    });
    t0 = Clock::now();
    EXPECT_EQ(pub.publish(pub.loan(10), Clock::now() + 10s), PubSubStatus::ok);
    const auto waited = Clock::now() - t0;
    killer.join();
    EXPECT_EQ(c2.wait(), -SIGKILL);
    EXPECT_GE(waited, 50ms) << "the publisher should have waited on the live subscriber";
    EXPECT_LT(waited, 2s) << "the publisher kept waiting on a dead subscriber";
    EXPECT_EQ(topic.stats().reclaimed_subscribers, 2u);
  }
  expect_clean(topic, base_blocks);
}

TEST_F(PubSubCrash, ShmkitRmStaleReclaimsADeadSubscribersSamples) {
  shmkit::testing::ShmNameGuard name(shmkit::testing::unique_name("pubsub-rm"));
  Segment nseg = Segment::create(name.name(), 16 << 20);
  Heap& nheap = Heap::attach(nseg);
  Topic topic = Topic::open(nheap, "cam", {});
  const std::uint64_t base_blocks = nheap.stats().blocks_in_use;
  {
    BytesPublisher pub(nheap, "cam");
    Child c([&]() -> int {
      BytesSubscriber sub(nheap, "cam");
      flags->ready = 1;
      SampleBytes a = sub.take(Clock::now() + 10s);
      if (!a) return 2;
      flags->ready = 2;
      for (;;) std::this_thread::sleep_for(1s);
    });
    wait_ready(1);
    ASSERT_EQ(pub.publish(pub.loan(4096)), PubSubStatus::ok);
    ASSERT_EQ(pub.publish(pub.loan(4096)), PubSubStatus::ok);
    wait_ready(2);
    // `shmkit info` lists the topic, its publisher and its subscriber with the queue depth.
    auto info = shmkit::testing::run_tool({"info", name.name()});
    EXPECT_EQ(info.exit_code, 0) << info.err;
    EXPECT_NE(info.out.find("topic cam: published 2"), std::string::npos) << info.out;
    EXPECT_NE(info.out.find("publisher  slot 0"), std::string::npos) << info.out;
    EXPECT_NE(info.out.find("drop_oldest queue 1/16, held 1"), std::string::npos) << info.out;
    auto json = shmkit::testing::run_tool({"info", name.name(), "--json"});
    EXPECT_NE(json.out.find("\"topics\":[{\"name\":\"cam\""), std::string::npos) << json.out;
    c.kill(SIGKILL);
    EXPECT_EQ(c.wait(), -SIGKILL);
    EXPECT_EQ(topic.stats().live_samples, 2u);
    auto r = shmkit::testing::run_tool({"rm", "--stale"});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    EXPECT_NE(r.out.find("reclaimed"), std::string::npos) << r.out;
    TopicStats st = topic.stats();
    EXPECT_EQ(st.reclaimed_subscribers, 1u);
    EXPECT_EQ(st.live_samples, 0u);
  }
  auto f = topic.verify();
  EXPECT_TRUE(f.empty()) << findings(f);
  EXPECT_EQ(nheap.stats().blocks_in_use, base_blocks);
  Heap::detach(nseg);
}

}  // namespace
