// What Queue and Channel say when the memory or the channel is not what the caller expects:
// attaching to memory that holds no queue / no channel (zeros, or the other kind of object) is
// Errc::bad_magic (not not_a_segment, which names segment files); a Channel whose windows all have
// live clients (in other processes) makes try_connect return ChannelStatus::no_free_window, and
// connect() throw out_of_memory naming it; once a client leaves, its window is free again.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <thread>

#include "shmkit/channels/channel.hpp"
#include "shmkit/channels/queue.hpp"
#include "shmkit/sys/error.hpp"
#include "testing.hpp"

using namespace shmkit;
using namespace std::chrono_literals;
using shmkit::testing::Child;
using shmkit::testing::SharedMem;

namespace {

template <class F>
Errc error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.code();
  }
  return Errc::ok;
}

}  // namespace

TEST(AttachErrors, QueueOnMemoryWithoutAQueueIsBadMagic) {
  SharedMem mem(1 << 16);
  std::memset(mem.base, 0, mem.size);
  EXPECT_EQ(error_of([&] { (void)Queue::attach(mem.base, mem.size); }), Errc::bad_magic);
  // A channel is not a queue either.
  (void)Channel::create(mem.base, mem.size, 1, 4096);
  EXPECT_EQ(error_of([&] { (void)Queue::attach(mem.base, mem.size); }), Errc::bad_magic);
  try {
    (void)Queue::attach(mem.base, mem.size);
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("Queue"), std::string::npos) << e.what();
  }
}

TEST(AttachErrors, ChannelOnMemoryWithoutAChannelIsBadMagic) {
  SharedMem mem(1 << 16);
  std::memset(mem.base, 0, mem.size);
  EXPECT_EQ(error_of([&] { (void)Channel::attach(mem.base, mem.size); }), Errc::bad_magic);
  (void)Queue::create(mem.base, mem.size, 256);
  EXPECT_EQ(error_of([&] { (void)Channel::attach(mem.base, mem.size); }), Errc::bad_magic);
}

TEST(AttachErrors, AFullChannelSaysNoFreeWindow) {
  constexpr std::uint32_t kWindows = 2, kMax = 4096;
  SharedMem mem(4096 + Channel::required_bytes(kWindows, kMax));
  auto* stop = new (mem.base) std::atomic<int>(0);
  auto* connected = new (mem.base + 64) std::atomic<int>(0);
  Channel ch = Channel::create(mem.base + 4096, mem.size - 4096, kWindows, kMax);
  Child server([&] {
    ChannelServer srv(Channel::attach(mem.base + 4096, mem.size - 4096));
    std::atomic<bool> quit{false};
    while (stop->load() == 0) srv.serve(quit, sys::Clock::now() + 20ms);
    return 0;
  });
  const auto until = sys::Clock::now() + 10s;
  while (ch.control()->server_up.load() == 0 && sys::Clock::now() < until) std::this_thread::sleep_for(1ms);
  // Two client processes take both windows and stay connected.
  std::vector<Child> clients;
  for (std::uint32_t i = 0; i < kWindows; ++i)
    clients.emplace_back([&] {
      ChannelClient cl;
      if (ChannelClient::try_connect(Channel::attach(mem.base + 4096, mem.size - 4096), cl,
                                     sys::Clock::now() + 10s) != ChannelStatus::ok)
        return 1;
      connected->fetch_add(1);
      while (stop->load() == 0) std::this_thread::sleep_for(1ms);
      return 0;
    });
  while (connected->load() < static_cast<int>(kWindows) && sys::Clock::now() < until)
    std::this_thread::sleep_for(1ms);
  ASSERT_EQ(connected->load(), static_cast<int>(kWindows));

  ChannelClient mine;
  EXPECT_EQ(ChannelClient::try_connect(ch, mine, sys::Clock::now() + 2s), ChannelStatus::no_free_window);
  EXPECT_FALSE(mine.connected());
  try {
    (void)ChannelClient::connect(ch, sys::Clock::now() + 2s);
    ADD_FAILURE() << "connect to a full channel must throw";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::out_of_memory);
    EXPECT_NE(std::string(e.what()).find("no_free_window"), std::string::npos) << e.what();
  }
  // A client that goes away (killed) frees its window for the next connect.
  clients[0].kill(SIGKILL);
  EXPECT_EQ(clients[0].wait(5s), -SIGKILL);
  EXPECT_EQ(ChannelClient::try_connect(ch, mine, sys::Clock::now() + 5s), ChannelStatus::ok);
  EXPECT_TRUE(mine.connected());
  mine.disconnect();
  stop->store(1);
  EXPECT_EQ(clients[1].wait(10s), 0);
  EXPECT_EQ(server.wait(10s), 0);
}
