// Tests WorkerPool::ready() (channels/pool.hpp) on its own, without wait() or supervise(): a task
// whose worker dies becomes ready by itself (issue 14 item 15: ready() stayed false forever unless
// something else called supervise()), a retried task becomes ready once its retry finished, and
// ready() is true for a finished task and false for a collected or foreign handle.
#include <gtest/gtest.h>
#include <signal.h>

#include <chrono>
#include <cstring>
#include <map>
#include <thread>

#include "shmkit/channels/pool.hpp"
#include "shmkit/sys/proc_control.hpp"
#include "testing.hpp"

using namespace shmkit;
using namespace std::chrono_literals;

namespace {

constexpr transport::wire::MsgId kEcho = 1, kDie = 2, kDieOnce = 3;

std::map<transport::wire::MsgId, TaskFn> handlers() {
  std::map<transport::wire::MsgId, TaskFn> h;
  h[kEcho] = [](const TaskContext&, std::span<const std::byte> in, std::span<std::byte> out, std::size_t& n) {
    std::memcpy(out.data(), in.data(), in.size());
    n = in.size();
    return 0;
  };
  h[kDie] = [](const TaskContext&, std::span<const std::byte>, std::span<std::byte>, std::size_t&) {
    (void)sys::kill(sys::getpid(), SIGKILL);
    return 0;
  };
  h[kDieOnce] = [](const TaskContext& c, std::span<const std::byte>, std::span<std::byte> out, std::size_t& n) {
    if (c.attempt == 1) (void)sys::kill(sys::getpid(), SIGKILL);
    out[0] = std::byte{42};
    n = 1;
    return 0;
  };
  return h;
}

// Polls ready() alone (no wait(), no supervise()) for up to `limit`.
bool becomes_ready(WorkerPool& pool, TaskHandle h, std::chrono::milliseconds limit) {
  const auto end = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < end) {
    if (pool.ready(h)) return true;
    std::this_thread::sleep_for(1ms);
  }
  return pool.ready(h);
}

TEST(PoolReady, ATaskWhoseWorkerDiedBecomesReadyWithoutWait) {
  WorkerPool pool({.workers = 1, .max_tasks = 4, .max_payload = 64, .max_result = 64}, handlers());
  TaskHandle h = pool.submit(kDie, {});
  ASSERT_TRUE(h.valid());
  ASSERT_TRUE(becomes_ready(pool, h, 3s)) << "ready() never noticed the worker's death";
  EXPECT_EQ(pool.stats().worker_deaths, 1u);
  TaskResult r = pool.wait(h, sys::Clock::now() + 1s);
  EXPECT_EQ(r.status, TaskStatus::worker_died);
  EXPECT_EQ(r.attempts, 1u);
  // The replacement worker serves.
  std::byte b[3] = {std::byte{1}, std::byte{2}, std::byte{3}};
  TaskHandle e = pool.submit(kEcho, b);
  ASSERT_TRUE(becomes_ready(pool, e, 3s));
  EXPECT_EQ(pool.wait(e).result.size(), 3u);
}

TEST(PoolReady, ARetriedTaskBecomesReadyAfterItsRetry) {
  WorkerPool pool({.workers = 2, .max_tasks = 4, .max_payload = 64, .max_result = 64}, handlers());
  TaskHandle h = pool.submit(kDieOnce, {}, TaskPolicy::retry_once);
  ASSERT_TRUE(becomes_ready(pool, h, 3s)) << "the retry never ran or ready() never saw it";
  TaskResult r = pool.wait(h, sys::Clock::now() + 1s);
  ASSERT_EQ(r.status, TaskStatus::done);
  EXPECT_EQ(r.attempts, 2u);
  ASSERT_EQ(r.result.size(), 1u);
  EXPECT_EQ(r.result[0], std::byte{42});
}

TEST(PoolReady, CollectedAndForeignHandlesAreNotReady) {
  WorkerPool pool({.workers = 1, .max_tasks = 4, .max_payload = 64, .max_result = 64}, handlers());
  TaskHandle h = pool.submit(kEcho, {});
  ASSERT_TRUE(becomes_ready(pool, h, 3s));
  EXPECT_EQ(pool.wait(h).status, TaskStatus::done);
  EXPECT_FALSE(pool.ready(h)) << "collected";
  EXPECT_FALSE(pool.ready(TaskHandle{}));
  EXPECT_FALSE(pool.ready(TaskHandle{99, 1})) << "no such slot";
  EXPECT_FALSE(pool.ready(TaskHandle{h.slot, h.generation + 7})) << "another generation";
}

}  // namespace
