// Tests publish/subscribe fan-out against a model: every subscriber sees every sample it is
// entitled to, in publish order, exactly once, under its back-pressure policy (drop_oldest: the
// model's bounded queue drops its oldest; block_publisher: nothing is lost), late joiners first get
// the last K samples (history), a sample is freed when its last reference goes (the heap's block
// count returns to where it was and Topic::verify() finds nothing), samples hold dynamically sized
// data (a vector on the segment's heap, destroyed with the sample), and bad use gets a clear status.
// The multi-process cases use forked subscriber processes.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <deque>
#include <memory>
#include <random>
#include <thread>
#include <string>
#include <vector>

#include "shmkit/channels/pubsub.hpp"
#include "shmkit/heap/allocator.hpp"
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
#define EXPECT_TOPIC_CLEAN(topic)                                            \
  do {                                                                       \
    auto f_ = (topic).verify();                                              \
    EXPECT_TRUE(f_.empty()) << f_.size() << " findings:\n" << findings(f_);  \
  } while (0)

struct Msg {
  std::uint64_t value;
  std::uint64_t check;
};
std::uint64_t check_of(std::uint64_t v) { return v * 0x9E3779B97F4A7C15ULL ^ 0x5555; }

class PubSub : public ::testing::Test {
 protected:
  Segment seg = Segment::create_anonymous(64 << 20, {.capacity = std::size_t{1} << 30});
  Heap& heap = Heap::attach(seg);
  std::uint64_t blocks() { return heap.stats().blocks_in_use; }
};

TEST_F(PubSub, SampleIsSharedNotCopiedAndFreedByTheLastRelease) {
  TopicOptions to;
  Topic topic = Topic::open(heap, "basic", to);
  Publisher<Msg> pub(heap, "basic");
  Subscriber<Msg> a(heap, "basic"), b(heap, "basic");
  const std::uint64_t base_blocks = blocks();
  auto l = pub.loan();
  ASSERT_TRUE(l);
  l->value = 7;
  l->check = check_of(7);
  const Msg* where = l.get();
  EXPECT_EQ(blocks(), base_blocks + 1);
  ASSERT_EQ(pub.publish(std::move(l)), PubSubStatus::ok);
  Sample<Msg> sa = a.try_take(), sb = b.try_take();
  ASSERT_TRUE(sa);
  ASSERT_TRUE(sb);
  EXPECT_EQ(sa.get(), where);  // the very block the publisher wrote: zero copy
  EXPECT_EQ(sb.get(), where);
  EXPECT_EQ(sa->value, 7u);
  EXPECT_EQ(sa.seq(), 1u);
  EXPECT_EQ(topic.stats().live_samples, 1u);
  sa.reset();
  (void)a.flush();
  EXPECT_EQ(blocks(), base_blocks + 1);  // b still holds it
  EXPECT_EQ(topic.stats().live_samples, 1u);
  sb.reset();
  (void)b.flush();
  EXPECT_EQ(blocks(), base_blocks);
  EXPECT_EQ(topic.stats().live_samples, 0u);
  EXPECT_EQ(topic.stats().freed, 1u);
  EXPECT_TOPIC_CLEAN(topic);
  PubSubStatus st = PubSubStatus::ok;
  EXPECT_FALSE(a.try_take(&st));
  EXPECT_EQ(st, PubSubStatus::would_block);
}

// One publisher, three subscribers with different depths, random interleaving of publishes and
// takes; each subscriber checked against a bounded-queue model that drops its oldest.
TEST_F(PubSub, DropOldestFanOutMatchesTheModel) {
  Topic topic = Topic::open(heap, "model", {.max_subscribers = 4, .queue_depth = 8, .max_held = 4});
  Publisher<Msg> pub(heap, "model");
  std::vector<std::unique_ptr<Subscriber<Msg>>> subs;
  const std::uint32_t depths[3] = {1, 3, 8};
  for (auto d : depths) subs.push_back(std::make_unique<Subscriber<Msg>>(heap, "model", TopicOptions{}, SubscriberOptions{.queue_depth = d}));
  const std::uint64_t base_blocks = blocks();
  std::vector<std::deque<std::uint64_t>> model(3);
  std::vector<std::uint64_t> dropped(3, 0);
  std::vector<std::vector<Sample<Msg>>> holding(3);
  std::mt19937 rng(12345);
  std::uint64_t next = 1;
  for (int step = 0; step < 20000; ++step) {
    const int what = static_cast<int>(rng() % 8);
    if (what < 3) {
      auto l = pub.loan();
      ASSERT_TRUE(l);
      l->value = next;
      l->check = check_of(next);
      ASSERT_EQ(pub.publish(std::move(l)), PubSubStatus::ok);
      for (int i = 0; i < 3; ++i) {
        if (model[i].size() == depths[i]) {
          model[i].pop_front();
          ++dropped[i];
        }
        model[i].push_back(next);
      }
      ++next;
    } else {
      const int i = what % 3;
      if (holding[i].size() == 4 || rng() % 3 == 0) {
        if (!holding[i].empty()) holding[i].erase(holding[i].begin());
        continue;
      }
      PubSubStatus st;
      Sample<Msg> s = subs[i]->try_take(&st);
      if (model[i].empty()) {
        EXPECT_FALSE(s);
        EXPECT_EQ(st, PubSubStatus::would_block);
        continue;
      }
      ASSERT_TRUE(s) << to_string(st);
      EXPECT_EQ(s->value, model[i].front()) << "subscriber " << i << " step " << step;
      EXPECT_EQ(s->check, check_of(s->value));
      EXPECT_EQ(s.seq(), s->value);
      model[i].pop_front();
      holding[i].push_back(std::move(s));
    }
  }
  TopicStats st = topic.stats();
  ASSERT_EQ(st.subscribers.size(), 3u);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(st.subscribers[i].dropped, dropped[i]) << i;
    EXPECT_EQ(st.subscribers[i].queued, model[i].size()) << i;
  }
  EXPECT_TOPIC_CLEAN(topic);
  for (auto& h : holding) h.clear();
  subs.clear();
  EXPECT_EQ(topic.stats().live_samples, 0u);
  EXPECT_EQ(blocks(), base_blocks);
  EXPECT_TOPIC_CLEAN(topic);
}

TEST_F(PubSub, LateJoinerGetsTheLastKSamples) {
  Topic topic = Topic::open(heap, "hist", {.history = 3});
  Publisher<Msg> pub(heap, "hist");
  for (std::uint64_t v = 1; v <= 5; ++v) {
    auto l = pub.loan(Msg{v, check_of(v)});
    ASSERT_EQ(pub.publish(std::move(l)), PubSubStatus::ok);
  }
  EXPECT_EQ(topic.stats().live_samples, 3u);  // the history keeps 3
  Subscriber<Msg> late(heap, "hist");
  Subscriber<Msg> no_history(heap, "hist", {}, {.history = false});
  for (std::uint64_t v = 3; v <= 5; ++v) {
    Sample<Msg> s = late.try_take();
    ASSERT_TRUE(s);
    EXPECT_EQ(s->value, v);
  }
  EXPECT_FALSE(late.try_take());
  EXPECT_FALSE(no_history.try_take());
  auto l = pub.loan(Msg{6, check_of(6)});
  ASSERT_EQ(pub.publish(std::move(l)), PubSubStatus::ok);
  EXPECT_EQ(late.try_take()->value, 6u);
  EXPECT_EQ(no_history.try_take()->value, 6u);
  EXPECT_TOPIC_CLEAN(topic);
}

// Three forked subscriber processes: one block_publisher with a tiny queue (must see all N, in
// order), two drop_oldest (a strictly increasing subsequence; received + dropped == N), one of
// them prefetching 3 samples per take.
TEST_F(PubSub, ProcessesBlockPublisherLosesNothingDropOldestCountsDrops) {
  constexpr std::uint64_t kN = 20000;
  Topic topic = Topic::open(heap, "procs", {.max_subscribers = 4, .queue_depth = 4});
  shmkit::testing::SharedMem shm(4096);
  auto* ready = reinterpret_cast<std::atomic<int>*>(shm.base);
  auto* results = reinterpret_cast<std::atomic<std::uint64_t>*>(shm.base + 64);  // [i*4 + {received, bad, last}]
  std::vector<Child> kids;
  for (int i = 0; i < 3; ++i) {
    kids.emplace_back([&, i] {
      SubscriberOptions so;
      so.policy = i == 0 ? BackPressure::block_publisher : BackPressure::drop_oldest;
      so.queue_depth = i == 0 ? 2 : 4;
      so.prefetch = i == 1 ? 3 : 1;  // subscriber 1 takes up to 3 per lock round trip
      Subscriber<Msg> sub(heap, "procs", {}, so);
      ready->fetch_add(1);
      std::uint64_t last = 0, received = 0, bad = 0;
      while (last < kN) {
        Sample<Msg> s = sub.take(Clock::now() + 10s);
        if (!s) return 3;
        if (s->value <= last || s->check != check_of(s->value) || s.seq() != s->value) ++bad;
        if (i == 0 && s->value != last + 1) ++bad;
        last = s->value;
        ++received;
      }
      results[i * 4 + 0] = received;
      results[i * 4 + 1] = bad;
      results[i * 4 + 2] = last;
      return 0;
    });
  }
  while (ready->load() < 3) std::this_thread::sleep_for(1ms);
  {
    Publisher<Msg> pub(heap, "procs");
    for (std::uint64_t v = 1; v <= kN; ++v) {
      auto l = pub.loan(Msg{v, check_of(v)});
      ASSERT_TRUE(l);
      ASSERT_EQ(pub.publish(std::move(l), Clock::now() + 10s), PubSubStatus::ok) << v;
    }
  }
  for (auto& k : kids) EXPECT_EQ(k.wait(), 0);
  EXPECT_EQ(results[0].load(), kN);  // block_publisher: every sample
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(results[i * 4 + 1].load(), 0u) << "subscriber " << i << " saw a sample out of order or twice";
    EXPECT_EQ(results[i * 4 + 2].load(), kN);
  }
  TopicStats st = topic.stats();
  EXPECT_EQ(st.published, kN);
  EXPECT_EQ(st.live_samples, 0u);
  EXPECT_TRUE(st.subscribers.empty());
  EXPECT_TOPIC_CLEAN(topic);
}

TEST_F(PubSub, BlockPublisherTimesOutAndKeepsTheLoan) {
  Topic topic = Topic::open(heap, "block", {});
  Publisher<Msg> pub(heap, "block");
  Subscriber<Msg> slow(heap, "block", {}, {.policy = BackPressure::block_publisher, .queue_depth = 1});
  ASSERT_EQ(pub.publish(pub.loan(Msg{1, check_of(1)})), PubSubStatus::ok);
  auto l = pub.loan(Msg{2, check_of(2)});
  const auto t0 = Clock::now();
  EXPECT_EQ(pub.publish(l, Clock::now() + 50ms), PubSubStatus::timed_out);
  EXPECT_GE(Clock::now() - t0, 45ms);
  EXPECT_TRUE(l);  // still loaned
  EXPECT_EQ(slow.try_take()->value, 1u);
  EXPECT_EQ(pub.publish(l, Clock::now() + 1s), PubSubStatus::ok);
  EXPECT_EQ(slow.try_take()->value, 2u);
  EXPECT_TOPIC_CLEAN(topic);
}

// A sample holding a vector on the segment's heap: dynamic size; the vector's storage goes back
// with the sample.
using ShmVec = std::vector<std::uint32_t, Allocator<std::uint32_t>>;
struct Frame {
  std::uint64_t id;
  ShmVec pixels;
  Frame(std::uint64_t i, std::size_t n, Heap& h) : id(i), pixels(Allocator<std::uint32_t>(h)) {
    pixels.resize(n);
    for (std::size_t k = 0; k < n; ++k) pixels[k] = static_cast<std::uint32_t>(i + k);
  }
};

TEST_F(PubSub, DynamicallySizedSamplesAreDestroyedWithTheSample) {
  Topic topic = Topic::open(heap, "frames", {});
  Publisher<Frame> pub(heap, "frames");
  Subscriber<Frame> sub(heap, "frames");
  const std::uint64_t base_blocks = blocks();
  for (std::uint64_t i = 1; i <= 50; ++i) {
    auto l = pub.loan(i, static_cast<std::size_t>(i * 100), heap);
    ASSERT_TRUE(l);
    ASSERT_EQ(pub.publish(std::move(l)), PubSubStatus::ok);
    Sample<Frame> f = sub.try_take();
    ASSERT_TRUE(f);
    ASSERT_EQ(f->pixels.size(), i * 100);
    EXPECT_EQ(f->pixels.back(), static_cast<std::uint32_t>(i + i * 100 - 1));
  }
  (void)sub.flush();
  EXPECT_EQ(blocks(), base_blocks);
  // A loan dropped unpublished runs ~Frame too.
  { auto l = pub.loan(std::uint64_t{99}, std::size_t{1000}, heap); }
  EXPECT_EQ(blocks(), base_blocks);
  EXPECT_TOPIC_CLEAN(topic);
}

TEST_F(PubSub, BadUseGetsAClearError) {
  EXPECT_THROW(Topic::open(heap, "", {}), Error);
  EXPECT_THROW(Topic::open(heap, std::string(100, 'x'), {}), Error);
  EXPECT_THROW(Topic::open(heap, "opts", {.history = 65}), Error);
  EXPECT_THROW(Topic::open(heap, "opts", {.queue_depth = 0}), Error);
  Publisher<Msg> pm(heap, "typed");
  try {
    Subscriber<Frame> wrong(heap, "typed");
    ADD_FAILURE() << "a subscriber of another type was accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::invalid_argument);
    EXPECT_NE(std::string(e.what()).find("another type"), std::string::npos) << e.what();
  }
  Topic::open(heap, "small", {.max_subscribers = 1});
  Subscriber<Msg> one(heap, "small");
  EXPECT_THROW(Subscriber<Msg>(heap, "small"), Error);
  BytesPublisher bp(heap, "bytes", {.max_loans = 1});
  PubSubStatus st;
  LoanedBytes l1 = bp.loan(10, &st);
  EXPECT_TRUE(l1);
  LoanedBytes l2 = bp.loan(10, &st);
  EXPECT_FALSE(l2);
  EXPECT_EQ(st, PubSubStatus::too_many_loans);
  EXPECT_EQ(bp.publish(l2), PubSubStatus::invalid_argument);
  BytesSubscriber bs(heap, "bytes", {}, {.queue_depth = 4});
  auto names = Topic::list(heap);
  EXPECT_NE(std::find(names.begin(), names.end(), "bytes"), names.end());
  // max_held: a subscriber that holds too many gets too_many_held, not a hang or a crash.
  Topic::open(heap, "held", {.max_held = 1});
  BytesPublisher hp(heap, "held");
  BytesSubscriber hs(heap, "held");
  ASSERT_EQ(hp.publish(hp.loan(1)), PubSubStatus::ok);
  ASSERT_EQ(hp.publish(hp.loan(1)), PubSubStatus::ok);
  SampleBytes h1 = hs.try_take();
  EXPECT_TRUE(h1);
  SampleBytes h2 = hs.try_take(&st);
  EXPECT_FALSE(h2);
  EXPECT_EQ(st, PubSubStatus::too_many_held);
}

}  // namespace
