// Tests the ways an Agent is driven and managed: by the caller's own loop (serve_once, run until
// the last client leaves) in a forked process, several clients served at once from several
// threads of another process, windows exported and unexported while clients are connected (an
// unexported window is refused at once), re-exporting a grown segment, and tiny socket buffers on
// both ends (every send and receive partial, splices returning EAGAIN) still moving every byte.
#include <gtest/gtest.h>
#include <sys/socket.h>

#include <atomic>
#include <thread>
#include <vector>

#include "memory_agent_fixture.hpp"
#include "shmkit/shm/segment.hpp"
#include "shmkit/transport/socket_transport.hpp"

namespace shmkit::transport {
namespace {

using shmkit::testing::Child;

TEST(AgentServing, CallerDrivenLoopServesSeveralClientsAtOnceUntilTheyLeave) {
  constexpr int kClients = 3;
  std::vector<int> mine, theirs;
  for (int i = 0; i < kClients; ++i) {
    int sv[2];
    ASSERT_EQ(sys::socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    mine.push_back(sv[0]);
    theirs.push_back(sv[1]);
  }
  Child agent_proc([&] {
    for (int fd : mine) (void)sys::close(fd);
    int mem = static_cast<int>(sys::check(sys::memfd_create("serving", MFD_CLOEXEC), "memfd"));
    sys::check(sys::ftruncate(mem, 8 << 20), "ftruncate");
    auto* p = static_cast<std::uint8_t*>(testing::map_or_throw(8 << 20, mem));
    testing::fill_pattern(p, 0, 0, 8 << 20);
    Agent agent;
    agent.export_window({p, 8 << 20, true, mem, 0});
    for (int fd : theirs) agent.add_client(fd);
    // The caller's loop: serve_once until every client has gone.
    int turns = 0;
    while (agent.serve_once(5000) > 0) ++turns;
    AgentStats st = agent.stats();
    return (turns > 0 && st.clients_closed == kClients && st.requests >= kClients * 40) ? 0 : 3;
  });
  for (int fd : theirs) (void)sys::close(fd);
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < kClients; ++i) {
    threads.emplace_back([&, i] {
      try {
        SocketTransport t(mine[static_cast<std::size_t>(i)]);
        std::vector<std::uint8_t> buf(300000);
        for (int k = 0; k < 20; ++k) {
          std::uint64_t off = static_cast<std::uint64_t>(i * 1000003 + k * 4099) % (7 << 20);
          if (t.read(t.windows()[0].address + off, buf.data(), buf.size()) != 0) ++failures;
          for (std::size_t j = 0; j < buf.size(); j += 997)
            if (buf[j] != testing::pattern(0, off + j)) {
              ++failures;
              break;
            }
          // Each client writes its own byte range and reads it back.
          std::uint64_t own = (std::uint64_t{7} << 20) + static_cast<std::uint64_t>(i) * 4096;
          std::uint8_t v = static_cast<std::uint8_t>(k + i);
          std::vector<std::uint8_t> data(4096, v), back(4096);
          if (t.write(t.windows()[0].address + own, data.data(), 4096) != 0) ++failures;
          if (t.read(t.windows()[0].address + own, back.data(), 4096) != 0 || back != data) ++failures;
        }
      } catch (const std::exception& e) {
        ADD_FAILURE() << e.what();
        ++failures;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(agent_proc.wait(std::chrono::seconds(15)), 0);
}

TEST(AgentServing, UnexportedWindowIsRefusedAtOnceAndGrownSegmentIsReExported) {
  Segment seg = Segment::create_anonymous(1 << 20);
  std::memset(seg.base() + 65536, 0x5A, 4096);
  Agent agent;
  agent.export_segment(seg, /*writable=*/false);
  EXPECT_THROW(agent.export_window({seg.base() + 4096, 4096, false, -1, 0}), Error);  // overlap
  int sv[2];
  ASSERT_EQ(sys::socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
  agent.add_client(sv[1]);
  agent.start();
  {
    SocketTransport t(sv[0], SocketTransportOptions{.own_fd = false});
    ASSERT_EQ(t.windows().size(), 1u);
    const std::uint64_t base = t.windows()[0].address;
    EXPECT_EQ(t.windows()[0].length, seg.size());
    std::uint8_t b[16];
    ASSERT_EQ(t.read(base + 65536, b, sizeof b), 0);
    EXPECT_EQ(b[15], 0x5A);
    EXPECT_EQ(t.write(base + 65536, b, sizeof b), -EACCES);
    // Grow the segment and export it again (same address: replaces the window).
    seg.grow(4 << 20);
    agent.export_segment(seg, true);
    ASSERT_EQ(t.refresh_windows(), 0);
    ASSERT_EQ(t.windows().size(), 1u);
    EXPECT_EQ(t.windows()[0].length, seg.size());
    std::vector<std::uint8_t> big(3 << 20, 0x11);
    ASSERT_EQ(t.write(base + (1 << 20), big.data(), big.size()), 0);
    EXPECT_EQ(std::to_integer<int>(seg.base()[(1 << 20) + 12345]), 0x11);
    // Unexport: the next request is refused; the agent no longer touches the memory.
    EXPECT_TRUE(agent.unexport_window(seg.base()));
    EXPECT_FALSE(agent.unexport_window(seg.base()));
    EXPECT_EQ(t.read(base + 65536, b, sizeof b), -EFAULT);
    ASSERT_EQ(t.refresh_windows(), 0);
    EXPECT_TRUE(t.windows().empty());
  }
  agent.stop();
  (void)sys::close(sv[0]);
}

TEST(AgentServing, TinySocketBuffersMakeEveryTransferPartialAndNothingIsLost) {
  for (bool zero_copy : {true, false}) {
    SCOPED_TRACE(zero_copy ? "splice" : "copy");
    testing::AgentConfig cfg;
    cfg.zero_copy = zero_copy;
    cfg.socket_buffer = 4096;  // the kernel's minimum is about this: many short sends
    testing::AgentProcess agent(/*exec=*/true, cfg);
    int fd = agent.connect();
    ASSERT_EQ(sys::setsockopt_int(fd, SOL_SOCKET, SO_SNDBUF, 4096), 0);
    ASSERT_EQ(sys::setsockopt_int(fd, SOL_SOCKET, SO_RCVBUF, 4096), 0);
    SocketTransport t(fd);
    const std::uint64_t base = t.windows()[0].address;
    std::vector<std::uint8_t> buf((5 << 20) + 3);
    ASSERT_EQ(t.read(base + 1, buf.data(), buf.size()), 0);
    for (std::size_t i = 0; i < buf.size(); ++i) ASSERT_EQ(buf[i], testing::pattern(0, 1 + i)) << i;
    for (std::size_t i = 0; i < buf.size(); ++i) buf[i] = static_cast<std::uint8_t>(i * 7);
    ASSERT_EQ(t.write(base + 4099, buf.data(), buf.size()), 0);
    std::vector<std::uint8_t> back(buf.size());
    ASSERT_EQ(t.read(base + 4099, back.data(), back.size()), 0);
    EXPECT_TRUE(back == buf);
    EXPECT_EQ(agent.finish(), 0);
  }
}

}  // namespace
}  // namespace shmkit::transport
