// Semaphore between processes: producers post, consumers wait, every unit is consumed exactly once
// (no lost wake-up with sleepers: the counts balance and nobody hangs); post(n) wakes n sleepers;
// try_wait never sleeps.
#include <gtest/gtest.h>

#include <atomic>
#include <vector>

#include "lock_test_util.hpp"
#include "shmkit/locks/semaphore.hpp"
#include "testing.hpp"

using namespace shmkit;
using namespace std::chrono_literals;
using shmkit::testing::Child;
using shmkit::testing::eventually;
using shmkit::testing::Shared;

namespace {
struct Arena {
  Semaphore items;
  std::atomic<std::int64_t> consumed{0};
  std::atomic<int> waiting{0};
};
constexpr int kPerProducer = 50000;
}  // namespace

TEST(LocksSemaphore, ProducersAndConsumersAcrossProcesses) {
  Shared<Arena> a;
  std::vector<Child> kids;
  for (int c = 0; c < 2; ++c)
    kids.emplace_back([&] {
      for (int i = 0; i < kPerProducer; ++i) {
        if (!a->items.wait_for(10s)) return 1;
        a->consumed.fetch_add(1);
      }
      return 0;
    });
  for (int p = 0; p < 2; ++p)
    kids.emplace_back([&] {
      for (int i = 0; i < kPerProducer; ++i) a->items.post();
      return 0;
    });
  for (auto& k : kids) EXPECT_EQ(k.wait(20s), 0);
  EXPECT_EQ(a->consumed.load(), 2 * kPerProducer);
  EXPECT_EQ(a->items.value(), 0u);
}

TEST(LocksSemaphore, PostNWakesNSleepers) {
  Shared<Arena> a;
  std::vector<Child> kids;
  for (int c = 0; c < 3; ++c)
    kids.emplace_back([&] {
      a->waiting.fetch_add(1);
      return a->items.wait_for(10s) ? 0 : 1;
    });
  ASSERT_TRUE(eventually([&] { return a->waiting.load() == 3; }));
  std::this_thread::sleep_for(20ms);
  a->items.post(3);
  for (auto& k : kids) EXPECT_EQ(k.wait(5s), 0);
  EXPECT_EQ(a->items.value(), 0u);
}

TEST(LocksSemaphore, TryWait) {
  Shared<Arena> a;
  EXPECT_FALSE(a->items.try_wait());
  a->items.post(2);
  EXPECT_TRUE(a->items.try_wait());
  EXPECT_TRUE(a->items.try_wait());
  EXPECT_FALSE(a->items.try_wait());
}
