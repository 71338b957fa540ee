// Tests that a peer dying or stalling in the middle of a transfer is an error, never a hang: the
// agent process SIGKILLed halfway through a read reply (socket -> -EPIPE; vm -> -EPIPE), an agent
// that stops sending (-ETIMEDOUT after io_timeout), and on the agent side a client SIGKILLed while
// receiving a large reply or one that stops reading: the agent drops that client and keeps
// serving the others.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/socket.h>

#include <array>
#include <chrono>
#include <thread>
#include <vector>

#include "memory_agent_fixture.hpp"
#include "shmkit/transport/connect_memory.hpp"
#include "shmkit/transport/memory_protocol.hpp"
#include "shmkit/transport/socket_transport.hpp"

namespace shmkit::transport {
namespace {

using shmkit::testing::Child;
using testing::AgentConfig;
using testing::AgentProcess;
namespace mp = memproto;

Deadline soon() { return Deadline::after(std::chrono::seconds(5)); }
constexpr std::uint64_t kFakeBase = 0x10000000;

// A fake agent: answers Hello and Windows like the real one, then on the first Read sends the
// header and half the data, and then either dies (SIGKILL) or goes silent.
int fake_agent(int fd, bool die) {
  std::vector<std::byte> buf(1 << 16);
  wire::Header h;
  if (recv_frame(fd, h, buf, wire::kDefaultMaxMessage, soon()) < 0 || h.id != wire::ids::hello) return 2;
  wire::Hello mine;
  mine.pid = ::getpid();
  mine.ids = {mp::ids::windows, mp::ids::read, mp::ids::write};
  mine.features = {"memory"};
  std::uint32_t n = wire::encode_hello(buf, h.tag, mine);
  if (send_all(fd, buf.data(), n, soon()) < 0) return 3;
  if (recv_frame(fd, h, buf, wire::kDefaultMaxMessage, soon()) < 0 || h.id != mp::ids::windows) return 4;
  wire::Writer w(buf);
  w.begin(mp::ids::windows, h.tag);
  std::array<mp::WindowDesc, 1> ws{mp::WindowDesc{kFakeBase, 64 << 20, mp::access_read, 0}};
  w.slice(std::span<const mp::WindowDesc>(ws));
  n = w.finish();
  if (send_all(fd, buf.data(), n, soon()) < 0) return 5;
  long got = recv_frame(fd, h, buf, wire::kDefaultMaxMessage, soon());
  if (got < 0 || h.id != mp::ids::read) return 6;
  mp::ReadRequest req;
  std::memcpy(&req, buf.data(), sizeof req);
  wire::Header rh{static_cast<std::uint32_t>(wire::kHeaderSize + req.length), mp::ids::read, 0, h.tag};
  if (send_all(fd, &rh, sizeof rh, soon()) < 0) return 7;
  std::vector<std::byte> half(req.length / 2, std::byte{1});
  if (send_all(fd, half.data(), half.size(), soon()) < 0) return 8;
  if (die) ::raise(SIGKILL);
  std::this_thread::sleep_for(std::chrono::seconds(20));  // silent; the test kills us
  return 0;
}

void run_against_fake(bool die) {
  int sv[2];
  ASSERT_EQ(sys::socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
  Child agent([&] {
    (void)sys::close(sv[0]);
    return fake_agent(sv[1], die);
  });
  (void)sys::close(sv[1]);
  SocketTransportOptions o;
  o.io_timeout = std::chrono::milliseconds(400);
  SocketTransport t(sv[0], o);
  std::vector<std::uint8_t> buf(1 << 20);
  auto t0 = std::chrono::steady_clock::now();
  int r = t.read(kFakeBase, buf.data(), buf.size());
  auto took = std::chrono::steady_clock::now() - t0;
  EXPECT_EQ(r, die ? -EPIPE : -ETIMEDOUT);
  EXPECT_LT(took, std::chrono::seconds(3));
  EXPECT_TRUE(t.broken());
  EXPECT_EQ(t.read(kFakeBase, buf.data(), 10), -EPIPE);  // the stream position is lost for good
  if (die) {
    EXPECT_EQ(agent.wait(std::chrono::seconds(5)), -SIGKILL);
  }
}

TEST(PeerDeath, AgentKilledHalfwayThroughAReadReplyIsEPIPE) { run_against_fake(true); }
TEST(PeerDeath, AgentSilentHalfwayThroughAReadReplyIsETIMEDOUT) { run_against_fake(false); }

TEST(PeerDeath, RealAgentKilledDuringLargeReadsNeverHangs) {
  AgentProcess agent(/*exec=*/false);
  SocketTransportOptions o;
  o.io_timeout = std::chrono::milliseconds(2000);
  SocketTransport t(agent.connect(), o);
  std::vector<std::uint8_t> buf(testing::kRwSize);
  std::thread killer([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    agent.child().kill(SIGKILL);
  });
  auto t0 = std::chrono::steady_clock::now();
  int r = 0;
  while (r == 0 && std::chrono::steady_clock::now() - t0 < std::chrono::seconds(10))
    r = t.read(t.windows()[0].address, buf.data(), buf.size());
  killer.join();
  EXPECT_EQ(r, -EPIPE);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(5));
}

TEST(PeerDeath, VmTransportReportsADeadAgentAsEPIPE) {
  AgentProcess agent(/*exec=*/false);
  ConnectOptions co;
  co.choice = TransportChoice::vm_only;
  Connection c = connect_memory(agent.connect(), co);
  ASSERT_EQ(c.transport->kind(), "vm");
  std::vector<std::uint8_t> buf(4096);
  ASSERT_EQ(c.transport->read(c.transport->windows()[0].address, buf.data(), buf.size()), 0);
  agent.child().kill(SIGKILL);
  ASSERT_EQ(agent.child().wait(std::chrono::seconds(5)), -SIGKILL);
  EXPECT_EQ(c.transport->read(c.transport->windows()[0].address, buf.data(), buf.size()), -EPIPE);
}

// A raw client that asks for `requests` maximal reads, receives `take` bytes, then dies or stalls.
// It writes one byte to `ready` once the agent has started answering it.
int greedy_client(int fd, int requests, std::size_t take, bool die, int ready) {
  std::vector<std::byte> buf(1 << 16);
  wire::Hello h;
  std::uint32_t n = wire::encode_hello(buf, 1, h);
  if (send_all(fd, buf.data(), n, soon()) < 0) return 2;
  wire::Header rh;
  if (recv_frame(fd, rh, buf, wire::kDefaultMaxMessage, soon()) < 0) return 3;
  for (int i = 0; i < requests; ++i) {
    struct {
      wire::Header h;
      mp::ReadRequest r;
    } req{{mp::kReadRequestFrame, mp::ids::read, 0, static_cast<wire::Tag>(10 + i)},
          {static_cast<std::uint64_t>(std::stoull(std::string(std::getenv("SHMKIT_TEST_BASE")))),
           mp::max_data(wire::kDefaultMaxMessage)}};
    if (send_all(fd, &req, sizeof req, soon()) < 0) return 4;
  }
  std::vector<std::byte> sink(take);
  if (recv_exact(fd, sink.data(), take, soon()) < 0) return 5;
  char one = 1;
  if (sys::write(ready, &one, 1) != 1) return 6;
  if (die) ::raise(SIGKILL);
  std::this_thread::sleep_for(std::chrono::seconds(20));
  return 0;
}

// A raw client that starts a 4 MiB Write, sends 1 MiB of its data, then dies.
int dying_writer(int fd) {
  std::vector<std::byte> buf(1 << 20, std::byte{0x42});
  wire::Hello h;
  std::uint32_t n = wire::encode_hello(buf, 1, h);
  if (send_all(fd, buf.data(), n, soon()) < 0) return 2;
  wire::Header rh;
  if (recv_frame(fd, rh, buf, wire::kDefaultMaxMessage, soon()) < 0) return 3;
  const std::uint64_t len = 4 << 20;
  struct {
    wire::Header h;
    mp::WriteRequest w;
  } req{{static_cast<std::uint32_t>(mp::kWriteRequestPrefix + len), mp::ids::write, 0, 9},
        {static_cast<std::uint64_t>(std::stoull(std::string(std::getenv("SHMKIT_TEST_BASE")))), len}};
  if (send_all(fd, &req, sizeof req, soon()) < 0) return 4;
  std::fill(buf.begin(), buf.end(), std::byte{0x42});
  if (send_all(fd, buf.data(), buf.size(), soon()) < 0) return 5;
  ::raise(SIGKILL);
  return 0;
}

TEST(PeerDeath, AgentDropsAClientKilledHalfwayThroughAWrite) {
  AgentProcess agent(/*exec=*/false);
  SocketTransport good(agent.connect());
  ::setenv("SHMKIT_TEST_BASE", std::to_string(good.windows()[0].address).c_str(), 1);
  int fd = agent.connect();
  Child bad([&] { return dying_writer(fd); });
  (void)sys::close(fd);
  EXPECT_EQ(bad.wait(std::chrono::seconds(5)), -SIGKILL);
  std::vector<std::uint8_t> buf(4096);
  ASSERT_EQ(good.read(good.windows()[0].address + (2 << 20), buf.data(), buf.size()), 0);
  // Whatever prefix of the write arrived may have landed; past the 1 MiB sent nothing changed.
  for (std::size_t i = 0; i < buf.size(); ++i) ASSERT_EQ(buf[i], testing::pattern(0, (2 << 20) + i));
  auto t0 = std::chrono::steady_clock::now();
  while (agent.stats().clients_closed < 1 && std::chrono::steady_clock::now() - t0 < std::chrono::seconds(5))
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  EXPECT_GE(agent.stats().clients_closed, 1u);
  EXPECT_EQ(agent.finish(), 0);
}

void agent_survives_client(bool die) {
  AgentConfig cfg;
  cfg.io_timeout_ms = 500;
  AgentProcess agent(/*exec=*/false, cfg);
  SocketTransport good(agent.connect());
  ::setenv("SHMKIT_TEST_BASE", std::to_string(good.windows()[0].address).c_str(), 1);
  int fd = agent.connect();
  int ready[2];
  ASSERT_EQ(sys::pipe2(ready, 0), 0);
  Child bad([&] { return greedy_client(fd, 8, 100000, die, ready[1]); });
  (void)sys::close(fd);
  (void)sys::close(ready[1]);
  // The agent is busy with the bad client before the good one asks (else the good one could
  // be served first and this test would prove nothing).
  char one = 0;
  ASSERT_GT(sys::poll_one(ready[0], POLLIN, 5000), 0);
  ASSERT_EQ(sys::read(ready[0], &one, 1), 1);
  (void)sys::close(ready[0]);
  if (die) {
    EXPECT_EQ(bad.wait(std::chrono::seconds(5)), -SIGKILL);
  }
  // The agent finishes (or times out) the bad client and serves the good one.
  std::vector<std::uint8_t> buf(1 << 20);
  auto t0 = std::chrono::steady_clock::now();
  ASSERT_EQ(good.read(good.windows()[0].address, buf.data(), buf.size()), 0);
  for (std::size_t i = 0; i < buf.size(); i += 4093) ASSERT_EQ(buf[i], testing::pattern(0, i));
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(3));
  AgentStats st = agent.stats();
  EXPECT_GE(st.clients_closed, 1u);
  bad.kill(SIGKILL);
  EXPECT_EQ(agent.finish(), 0);
}

TEST(PeerDeath, AgentDropsAClientKilledWhileReceivingAndServesOthers) { agent_survives_client(true); }
TEST(PeerDeath, AgentDropsAClientThatStopsReadingAndServesOthers) { agent_survives_client(false); }

}  // namespace
}  // namespace shmkit::transport
