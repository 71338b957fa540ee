// EventCount (the one wait primitive) between real fork()ed processes: a notify wakes a sleeper in
// another process; waiters SIGKILLed at random points of the hand-off (announced, in the kernel,
// being woken) never make a live waiter miss a notify, and leave nothing behind but a waiter bit
// that the next notify clears; a notifier SIGKILLed between its store and its wake delays a
// waiter by at most one re-check slice (kRecheckSlice), never forever. Every wait is bounded, so a
// lost wake-up shows up as a timeout, not a hang.
#include "shmkit/locks/event_count.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <csignal>
#include <random>
#include <thread>
#include <vector>

#include "lock_test_util.hpp"
#include "testing.hpp"

using namespace shmkit;
using namespace std::chrono_literals;
using shmkit::testing::Child;
using shmkit::testing::Shared;

namespace {

struct Arena {
  EventCount ec;
  std::atomic<std::uint32_t> round{0};     // the condition: waiters wait for round >= k
  std::atomic<std::uint32_t> acked[4] = {};  // live waiter i has seen round acked[i]
  std::atomic<std::uint32_t> lost{0};      // waits that ran out although the round had come
  std::atomic<std::uint32_t> stop{0};
};

// Waits with the raw lifecycle and one long deadline (no re-check slices): a notify that does not
// reach this waiter leaves it asleep until the deadline.
bool wait_for_round(Arena& a, std::uint32_t k, sys::Deadline deadline) {
  for (;;) {
    if (a.round.load(std::memory_order_acquire) >= k) return true;
    EventCount::Key key = a.ec.prepare_wait();
    if (a.round.load(std::memory_order_acquire) >= k) {
      a.ec.cancel_wait();
      return true;
    }
    if (a.ec.wait(key, deadline) == sys::FutexResult::timed_out)
      return false;  // the round came long ago (the notifier waits for acks): lost
  }
}

// Until a waiter has announced itself (waiter bit set), then a little longer so that it is likely
// asleep in the kernel.
void wait_until_announced(Arena& a) {
  const auto give_up = sys::Clock::now() + 10s;
  while ((a.ec.value() & EventCount::kWaiterBit) == 0 && sys::Clock::now() < give_up)
    std::this_thread::sleep_for(100us);
  std::this_thread::sleep_for(5ms);
}

}  // namespace

TEST(LocksEventCount, NotifyWakesASleeperInAnotherProcess) {
  Shared<Arena> a;
  Child waiter([&a] { return wait_for_round(*a, 1, sys::Clock::now() + 10s) ? 0 : 1; });
  wait_until_announced(*a);
  a->round.store(1, std::memory_order_release);
  a->ec.notify_all();
  EXPECT_EQ(waiter.wait(10s), 0);
  EXPECT_EQ(a->ec.value() & EventCount::kWaiterBit, 0u) << "the notify clears the waiter bit";
}

TEST(LocksEventCount, NotifyWithNobodyWaitingLeavesTheWordAlone) {
  Shared<Arena> a;
  for (int i = 0; i < 1000; ++i) a->ec.notify_all();
  EXPECT_EQ(a->ec.value(), 0u);
}

TEST(LocksEventCount, AWaiterKilledAsleepCostsOneWakeAndIsForgotten) {
  Shared<Arena> a;
  Child victim([&a] { return wait_for_round(*a, 1, sys::Clock::now() + 60s) ? 0 : 1; });
  wait_until_announced(*a);
  victim.kill(SIGKILL);
  ASSERT_EQ(victim.wait(5s), -SIGKILL);
  EXPECT_NE(a->ec.value() & EventCount::kWaiterBit, 0u) << "the dead waiter's announcement stays";
  a->ec.notify_all();
  EXPECT_EQ(a->ec.value() & EventCount::kWaiterBit, 0u) << "one notify clears it";
  const std::uint32_t v = a->ec.value();
  a->ec.notify_all();
  EXPECT_EQ(a->ec.value(), v) << "later notifies are cheap again (no RMW)";
}

// Two live waiters and a stream of victim waiters on the same EventCount; the parent SIGKILLs each
// victim at a random moment (announced, asleep in FUTEX_WAIT, or being woken). A notifier advances
// the round only after both live waiters acknowledged the previous one, so every round needs a
// wake-up that reaches them: one absorbed by a victim, or cleared under a sleeper, is a 3 s
// timeout (lost).
TEST(LocksEventCount, KilledWaitersNeverStrandALiveWaiter) {
  Shared<Arena> a;
  std::vector<Child> live;
  for (int i = 0; i < 2; ++i)
    live.emplace_back([&a, i] {
      for (std::uint32_t k = 1; a->stop.load() == 0; ++k) {
        if (!wait_for_round(*a, k, sys::Clock::now() + 3s)) {
          if (a->stop.load() != 0) return 0;
          a->lost.fetch_add(1);
          return 1;
        }
        k = a->round.load(std::memory_order_acquire);
        a->acked[i].store(k, std::memory_order_release);
      }
      return 0;
    });
  Child notifier([&a] {
    std::minstd_rand rng(7);
    for (std::uint32_t k = 1; a->stop.load() == 0; ++k) {
      a->round.store(k, std::memory_order_release);
      a->ec.notify_all();
      const auto give_up = sys::Clock::now() + 5s;
      while ((a->acked[0].load() < k || a->acked[1].load() < k) && a->stop.load() == 0) {
        if (sys::Clock::now() > give_up) return 1;
        if (rng() % 4 == 0) std::this_thread::yield();
      }
      // Now and then let the waiters fall asleep first.
      if (rng() % 8 == 0) std::this_thread::sleep_for(std::chrono::microseconds(rng() % 300));
    }
    return 0;
  });
  std::mt19937 rng(12345);
  std::uniform_int_distribution<int> delay_us(50, 2000);
  const auto end = sys::Clock::now() + 3s;
  int victims = 0;
  while (sys::Clock::now() < end) {
    Child victim([&a] {
      for (std::uint32_t k = a->round.load() + 1;; ++k) (void)wait_for_round(*a, k, sys::Clock::now() + 50ms);
      return 0;
    });
    std::this_thread::sleep_for(std::chrono::microseconds(delay_us(rng)));
    victim.kill(SIGKILL);
    ASSERT_EQ(victim.wait(5s), -SIGKILL);
    ++victims;
  }
  const std::uint32_t rounds = a->round.load();
  a->stop.store(1);
  a->round.fetch_add(1000000);  // releases whoever waits
  a->ec.notify_all();
  EXPECT_EQ(notifier.wait(10s), 0);
  for (auto& c : live) EXPECT_EQ(c.wait(10s), 0);
  EXPECT_EQ(a->lost.load(), 0u) << "a live waiter slept 3 s through a notify: a lost wake-up";
  EXPECT_GT(rounds, 100u) << "too few hand-offs to mean anything";
  std::printf("%d victims killed, %u rounds\n", victims, rounds);
}

// A notifier that dies after making the condition true and before its wake (the worst point; no
// primitive can wake anyone for it) delays an await_until waiter by one re-check slice at most.
// Then the same with notifiers killed at random points of a stream of rounds.
TEST(LocksEventCount, AKilledNotifierDelaysAWaiterByOneSliceAtMost) {
  Shared<Arena> a;
  Child waiter([&a] {
    auto ready = [&] { return a->round.load(std::memory_order_acquire) >= 1; };
    return sleep_until(a->ec, ready, sys::Clock::now() + 20s) == AwaitResult::ready ? 0 : 1;
  });
  wait_until_announced(*a);
  Child dying_notifier([&a] {
    a->round.store(1, std::memory_order_release);
    ::raise(SIGKILL);  // dies before notify_all()
    return 0;
  });
  ASSERT_EQ(dying_notifier.wait(5s), -SIGKILL);
  const auto t0 = sys::Clock::now();
  EXPECT_EQ(waiter.wait(5s), 0);
  const auto waited = sys::Clock::now() - t0;
  EXPECT_LT(waited, kRecheckSlice + 500ms) << "the waiter must re-check within one slice";
}

TEST(LocksEventCount, NotifiersKilledAtRandomPointsLoseNoRound) {
  Shared<Arena> a;
  Child waiter([&a] {
    for (std::uint32_t seen = 0; a->stop.load() == 0;) {
      auto ready = [&] { return a->round.load(std::memory_order_acquire) != seen || a->stop.load() != 0; };
      if (sleep_until(a->ec, ready, sys::Clock::now() + 20s) != AwaitResult::ready) return 1;
      seen = a->round.load(std::memory_order_acquire);
      a->acked[0].store(seen, std::memory_order_release);
    }
    return 0;
  });
  std::mt19937 rng(99);
  std::uniform_int_distribution<int> delay_us(20, 1500);
  for (int n = 0; n < 40; ++n) {
    Child notifier([&a] {
      for (;;) {
        a->round.fetch_add(1, std::memory_order_release);
        a->ec.notify_all();
        std::this_thread::sleep_for(std::chrono::microseconds(30));
      }
      return 0;
    });
    std::this_thread::sleep_for(std::chrono::microseconds(delay_us(rng)));
    notifier.kill(SIGKILL);
    ASSERT_EQ(notifier.wait(5s), -SIGKILL);
    // The waiter must catch up with the last round within one slice (plus scheduling slack).
    const std::uint32_t last = a->round.load();
    const auto limit = sys::Clock::now() + kRecheckSlice + 1s;
    while (a->acked[0].load() != last && sys::Clock::now() < limit) std::this_thread::sleep_for(200us);
    ASSERT_EQ(a->acked[0].load(), last) << "the waiter missed the last round of a killed notifier";
  }
  a->stop.store(1);
  a->ec.notify_all();
  EXPECT_EQ(waiter.wait(10s), 0);
}
