// Tests the agent's EINVAL fallback from splicing to plain copies: a window backed by a
// memfd_secret file (which cannot splice in either direction) and one whose fd is opened O_APPEND
// (reads splice, writes into it say EINVAL after the bytes were already taken from the socket into
// the pipe). Every byte still arrives correctly, the agent counts one fallback per window, and
// later requests for that window use copies.
#include <gtest/gtest.h>

#include <random>
#include <vector>

#include "memory_agent_fixture.hpp"
#include "test_syscalls.hpp"
#include "shmkit/transport/socket_transport.hpp"

namespace shmkit::transport {
namespace {

using testing::AgentConfig;
using testing::AgentProcess;

void roundtrip(SocketTransport& t, std::uint64_t off, std::size_t len, unsigned seed) {
  std::mt19937 rng(seed);
  std::vector<std::uint8_t> data(len), back(len);
  for (auto& b : data) b = static_cast<std::uint8_t>(rng());
  const std::uint64_t base = t.windows()[0].address;
  ASSERT_EQ(t.write(base + off, data.data(), len), 0);
  ASSERT_EQ(t.read(base + off, back.data(), len), 0);
  ASSERT_TRUE(data == back) << "off " << off << " len " << len;
}

void check_pattern(SocketTransport& t, std::uint64_t off, std::size_t len) {
  std::vector<std::uint8_t> buf(len);
  ASSERT_EQ(t.read(t.windows()[0].address + off, buf.data(), len), 0);
  for (std::size_t i = 0; i < len; ++i) ASSERT_EQ(buf[i], testing::pattern(0, off + i)) << off + i;
}

TEST(SpliceFallback, UnspliceableFileIsServedWithCopies) {
  int probe = ::shmkit::testing::memfd_secret(0);
  if (probe == -ENOSYS) GTEST_SKIP() << "kernel without memfd_secret";
  ASSERT_GE(probe, 0);
  (void)sys::close(probe);
  AgentConfig cfg;
  cfg.backing = "secret";
  AgentProcess agent(false, cfg);
  SocketTransport t(agent.connect());
  check_pattern(t, 5, 3 << 20);
  AgentStats st = agent.stats();
  EXPECT_EQ(st.splice_fallbacks, 1u);
  EXPECT_EQ(st.bytes_spliced, 0u);
  EXPECT_GE(st.bytes_copied, std::uint64_t{3} << 20);
  roundtrip(t, 4097, (2 << 20) + 3, 1);
  EXPECT_EQ(agent.stats().splice_fallbacks, 1u);  // once per window, then copies directly
  // The window no longer advertises zero-copy.
  ASSERT_EQ(t.refresh_windows(), 0);
  EXPECT_EQ(t.windows()[0].flags & memproto::window_zero_copy, 0u);
  EXPECT_EQ(agent.finish(), 0);
}

TEST(SpliceFallback, WriteIntoAppendOnlyFdKeepsTheBytesAlreadyInThePipe) {
  AgentConfig cfg;
  cfg.backing = "append";
  AgentProcess agent(false, cfg);
  SocketTransport t(agent.connect());
  check_pattern(t, 0, 1 << 20);  // reads from an O_APPEND fd splice fine
  AgentStats before = agent.stats();
  EXPECT_GE(before.bytes_spliced, std::uint64_t{1} << 20);
  EXPECT_EQ(before.splice_fallbacks, 0u);
  // The first write: socket -> pipe works, pipe -> file says EINVAL with bytes in the pipe.
  roundtrip(t, 333, (3 << 20) + 17, 2);
  AgentStats after = agent.stats();
  EXPECT_EQ(after.splice_fallbacks, 1u);
  roundtrip(t, 0, 4096, 3);
  check_pattern(t, 333 + (3 << 20) + 17, 1000);  // bytes after the written range untouched
  EXPECT_EQ(agent.finish(), 0);
}

}  // namespace
}  // namespace shmkit::transport
