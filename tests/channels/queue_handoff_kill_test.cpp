// No lost wake-up in the Queue's hand-off when a waiter or a waker is SIGKILLed at a random point
// of it (real fork()ed processes):
//   * consumer waiters killed while spinning, announcing themselves, asleep in the kernel or being
//     woken (some holding the consumer lock mid-pop) never leave a live waiting consumer asleep: a
//     producer that pushes one message at a time and waits for it to be taken sees each one
//     taken within a bounded time;
//   * producers (the wakers) killed at random points of push — after the commit and before the
//     wake included — never leave the consumer asleep on a non-empty queue for longer than the
//     EventCount's re-check slice;
//   * the same for a full queue the other way round: producers waiting for space while consumers
//     are killed;
//   * deterministically, the worst point: a producer that commits a record and dies before its
//     tail store and its wake (no primitive can wake anyone for it) delays the sleeping consumer
//     by one re-check slice, never forever.
// Every wait is bounded (a lost wake-up fails the test; it never hangs it).
#include <gtest/gtest.h>
#include <signal.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <random>
#include <thread>
#include <vector>

#include "shmkit/channels/queue.hpp"
#include "shmkit/locks/event_count.hpp"
#include "testing.hpp"

using namespace shmkit;
using namespace std::chrono_literals;
using shmkit::testing::Child;
using shmkit::testing::SharedMem;

namespace {

struct Counters {
  std::atomic<std::uint32_t> taken{0};  // messages the live consumer took
  std::atomic<std::uint32_t> stop{0};
};

constexpr std::size_t kMsg = 64;

// The bound for "taken promptly": far above a wake-up (µs) or a re-check slice (50 ms), far below
// the waits' own deadlines.
constexpr auto kPrompt = 2s;

bool wait_until_true(const std::function<bool()>& f, std::chrono::milliseconds limit) {
  const auto until = sys::Clock::now() + limit;
  while (!f()) {
    if (sys::Clock::now() > until) return false;
    std::this_thread::sleep_for(100us);
  }
  return true;
}

}  // namespace

TEST(QueueHandoffKill, KilledConsumerWaitersNeverStrandALiveConsumer) {
  SharedMem cmem(sizeof(Counters));
  auto* cnt = new (cmem.base) Counters;
  SharedMem qmem(Queue::required_bytes(64 * 1024));
  Queue q = Queue::create(qmem.base, qmem.size, kMsg);
  Child live([&] {
    Queue mine = Queue::attach(qmem.base, qmem.size);
    std::byte buf[kMsg];
    while (cnt->stop.load() == 0) {
      QueueResult r = mine.pop(buf, sys::Clock::now() + 10s);
      if (r.status == QueueStatus::closed) return 0;
      if (r.status != QueueStatus::ok) return 1;
      cnt->taken.fetch_add(1);
    }
    return 0;
  });
  std::mt19937 rng(2024);
  std::byte msg[kMsg] = {};
  int victims = 0, rounds = 0;
  const auto end = sys::Clock::now() + 3s;
  while (sys::Clock::now() < end) {
    Child victim([&] {
      Queue mine = Queue::attach(qmem.base, qmem.size);
      std::byte buf[kMsg];
      for (;;) (void)mine.pop(buf, sys::Clock::now() + 10s);
      return 0;
    });
    // A few one-at-a-time hand-offs while the victim waits beside the live consumer; the victim
    // dies at a random point of one of them.
    const auto kill_at = sys::Clock::now() + std::chrono::microseconds(rng() % 3000);
    while (sys::Clock::now() < kill_at) {
      ASSERT_EQ(q.push(msg, sys::Clock::now() + 5s).status, QueueStatus::ok);
      ++rounds;
      // Taken by the live consumer or the victim — but taken, by someone awake: a message left
      // in the queue while a live consumer waits is a lost wake-up.
      ASSERT_TRUE(wait_until_true([&] { return q.empty(); }, kPrompt)) << "a pushed message stayed in the queue";
      if (rng() % 4 == 0) std::this_thread::sleep_for(std::chrono::microseconds(rng() % 200));  // let them sleep
    }
    victim.kill(SIGKILL);
    ASSERT_EQ(victim.wait(5s), -SIGKILL);
    ++victims;
  }
  // The live consumer still takes messages promptly after all those deaths.
  const std::uint32_t before = cnt->taken.load();
  for (int i = 0; i < 100; ++i) ASSERT_EQ(q.push(msg, sys::Clock::now() + 5s).status, QueueStatus::ok);
  EXPECT_TRUE(wait_until_true([&] { return cnt->taken.load() == before + 100; }, kPrompt));
  cnt->stop.store(1);
  q.close();
  EXPECT_EQ(live.wait(10s), 0);
  EXPECT_GT(rounds, 100);
  std::printf("%d victims, %d hand-offs\n", victims, rounds);
}

TEST(QueueHandoffKill, KilledProducersNeverLeaveTheConsumerAsleep) {
  SharedMem cmem(sizeof(Counters));
  auto* cnt = new (cmem.base) Counters;
  SharedMem qmem(Queue::required_bytes(64 * 1024));
  Queue q = Queue::create(qmem.base, qmem.size, kMsg);
  Child consumer([&] {
    Queue mine = Queue::attach(qmem.base, qmem.size);
    std::byte buf[kMsg];
    for (;;) {
      QueueResult r = mine.pop(buf, sys::Clock::now() + 20s);
      if (r.status == QueueStatus::closed) return 0;
      if (r.status != QueueStatus::ok) return 1;
      cnt->taken.fetch_add(1);
    }
  });
  std::mt19937 rng(4242);
  for (int n = 0; n < 60; ++n) {
    Child producer([&] {
      Queue mine = Queue::attach(qmem.base, qmem.size);
      std::byte msg[kMsg] = {};
      for (std::uint32_t i = 0;; ++i) {
        (void)mine.push(msg, sys::Clock::now() + 10s);
        // Mostly one message at a time so the consumer keeps falling asleep between them.
        if (i % 8 != 0) std::this_thread::sleep_for(std::chrono::microseconds(20));
      }
      return 0;
    });
    std::this_thread::sleep_for(std::chrono::microseconds(50 + rng() % 2000));
    producer.kill(SIGKILL);
    ASSERT_EQ(producer.wait(5s), -SIGKILL);
    // Whatever the dead producer committed, the consumer takes it within a re-check slice.
    ASSERT_TRUE(wait_until_true([&] { return q.empty(); }, kRecheckSlice + kPrompt))
        << "the consumer slept on a non-empty queue after producer " << n << " died";
  }
  q.close();
  EXPECT_EQ(consumer.wait(10s), 0);
  EXPECT_GT(cnt->taken.load(), 60u);
}

TEST(QueueHandoffKill, KilledConsumersNeverLeaveAProducerWaitingForSpace) {
  SharedMem cmem(sizeof(Counters));
  auto* cnt = new (cmem.base) Counters;
  SharedMem qmem(Queue::required_bytes(4096));
  Queue q = Queue::create(qmem.base, qmem.size, kMsg);
  Child producer([&] {
    Queue mine = Queue::attach(qmem.base, qmem.size);
    std::byte msg[kMsg] = {};
    while (cnt->stop.load() == 0) {
      QueueResult r = mine.push(msg, sys::Clock::now() + 20s);
      if (r.status == QueueStatus::closed) return 0;
      if (r.status != QueueStatus::ok) return 1;
      cnt->taken.fetch_add(1);  // here: pushes that returned
    }
    return 0;
  });
  std::mt19937 rng(99);
  for (int n = 0; n < 60; ++n) {
    Child consumer([&] {
      Queue mine = Queue::attach(qmem.base, qmem.size);
      std::byte buf[kMsg];
      for (std::uint32_t i = 0;; ++i) {
        (void)mine.pop(buf, sys::Clock::now() + 10s);
        if (i % 8 != 0) std::this_thread::sleep_for(std::chrono::microseconds(20));
      }
      return 0;
    });
    std::this_thread::sleep_for(std::chrono::microseconds(50 + rng() % 2000));
    consumer.kill(SIGKILL);
    ASSERT_EQ(consumer.wait(5s), -SIGKILL);
    // Drain from here: the producer (asleep on a full queue, or about to be) must go on pushing.
    const std::uint32_t before = cnt->taken.load();
    std::byte buf[kMsg];
    std::uint32_t popped = 0;
    const auto until = sys::Clock::now() + kRecheckSlice + kPrompt;
    while (cnt->taken.load() < before + 80 && sys::Clock::now() < until)
      popped += q.pop(buf, sys::Clock::now() + 1ms).status == QueueStatus::ok;
    ASSERT_GE(cnt->taken.load(), before + 80) << "the producer slept on a queue with space after consumer " << n
                                              << " died (" << popped << " popped)";
  }
  cnt->stop.store(1);
  q.close();
  EXPECT_EQ(producer.wait(10s), 0);
}

// The record a push writes (queue.cpp, RecordHeader; queue.hpp INVARIANT3): len, kind, then the
// commit word naming the record's position, then the payload.
constexpr std::uint32_t kKindMsg = 0x4d53u;

TEST(QueueHandoffKill, AProducerDeadBetweenCommitAndWakeDelaysTheConsumerOneSliceAtMost) {
  SharedMem qmem(Queue::required_bytes(64 * 1024));
  Queue q = Queue::create(qmem.base, qmem.size, kMsg);
  Child consumer([&] {
    Queue mine = Queue::attach(qmem.base, qmem.size);
    std::byte buf[kMsg];
    QueueResult r = mine.pop(buf, sys::Clock::now() + 20s);
    return r.status == QueueStatus::ok && r.size == kMsg && buf[0] == std::byte{0x77} ? 0 : 1;
  });
  // Until the consumer sleeps: announced on the items EventCount, then a little longer.
  ASSERT_TRUE(wait_until_true([&] { return (q.control()->items.value() & EventCount::kWaiterBit) != 0; }, 10s));
  std::this_thread::sleep_for(20ms);
  Child dying_producer([&] {
    Queue mine = Queue::attach(qmem.base, qmem.size);
    if (mine.claim_producer() != QueueStatus::ok) return 1;
    QueueControl* c = mine.control();
    auto* ring = reinterpret_cast<std::byte*>(c) + c->ring_offset;
    const std::uint64_t t = c->tail.load();
    std::byte* rec = ring + t % c->capacity;
    const std::uint32_t len = kMsg, kind = kKindMsg;
    std::memcpy(rec, &len, 4);
    std::memcpy(rec + 4, &kind, 4);
    std::memset(rec + Queue::kRecordHeader, 0x77, kMsg);
    std::atomic_ref<std::uint64_t>(*reinterpret_cast<std::uint64_t*>(rec + 8)).store(t, std::memory_order_release);
    ::raise(SIGKILL);  // dies holding the claim: no tail store, no notify
    return 2;
  });
  ASSERT_EQ(dying_producer.wait(5s), -SIGKILL);
  const auto t0 = sys::Clock::now();
  EXPECT_EQ(consumer.wait(10s), 0);
  EXPECT_LT(sys::Clock::now() - t0, kRecheckSlice + 1s) << "the consumer must re-check within one slice";
  // The next producer inherits the lock (owner_died), repairs tail over the dead one's record and
  // goes on: nothing delivered twice.
  std::byte msg[kMsg] = {};
  EXPECT_EQ(q.push(msg, sys::Clock::now() + 5s).status, QueueStatus::ok);
  std::byte buf[kMsg];
  EXPECT_EQ(q.try_pop(buf).status, QueueStatus::ok);
  EXPECT_EQ(q.try_pop(buf).status, QueueStatus::would_block);
}
