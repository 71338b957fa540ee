// Tests what a client believes about the process at the other end of the socket, which every
// transport learns in the one client handshake (agent_handshake.cpp):
// - the agent's pid is the kernel's record of who sent its Hello (SCM_CREDENTIALS), not the pid
//   field the agent wrote: a peer that names another process of the same user (here: the client's
//   own parent, which holds the same cookie after fork) must not steer the process_vm transport
//   at that process;
// - a peer that speaks the wire format but is no memory agent is the same error, Errc::protocol,
//   for the socket and the io_uring transport.
// The peers are forked processes that speak the handshake by hand.
#include <gtest/gtest.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <string>
#include <vector>

#include "memory_agent_fixture.hpp"
#include "shmkit/transport/connect_memory.hpp"
#include "shmkit/transport/uring_transport.hpp"

namespace shmkit::transport {
namespace {

namespace mp = memproto;
using shmkit::testing::Child;

// Set before fork, so the forked fake agent and this process hold the same cookie at the same address.
std::uint64_t g_cookie = 0;
std::array<std::uint8_t, 4096> g_window{};

struct FakeAgent {
  std::int32_t claimed_pid = 0;
  bool memory_agent = true;
};

// Answers one client's Hello and Windows request the way an agent would, with `fake`'s lies;
// then waits for the client to hang up. Exit 0, or the step that failed.
int serve_fake_agent(int fd, const FakeAgent& fake) {
  std::vector<std::byte> buf(wire::kDefaultMaxMessage);
  wire::Header h{};
  const auto deadline = [] { return Deadline::after(std::chrono::seconds(5)); };
  if (recv_frame(fd, h, buf, wire::kDefaultMaxMessage, deadline()) < 0 || h.id != wire::ids::hello) return 3;
  wire::Hello mine;
  mine.pid = fake.claimed_pid;
  if (fake.memory_agent) {
    mine.ids = {mp::ids::windows, mp::ids::read, mp::ids::write};
    char cookie[80];
    std::snprintf(cookie, sizeof cookie, "vm-cookie=%llx:%llx",
                  static_cast<unsigned long long>(reinterpret_cast<std::uintptr_t>(&g_cookie)),
                  static_cast<unsigned long long>(g_cookie));
    mine.features = {"memory", cookie};
  } else {
    mine.features = {"chat"};
  }
  const std::uint32_t n = wire::encode_hello(buf, h.tag, mine);
  if (n == 0 || send_all(fd, buf.data(), n, deadline()) < 0) return 4;
  if (recv_frame(fd, h, buf, wire::kDefaultMaxMessage, deadline()) >= 0 && h.id == mp::ids::windows) {
    const mp::WindowDesc w{reinterpret_cast<std::uintptr_t>(g_window.data()), g_window.size(),
                           mp::access_read | mp::access_write, 0};
    wire::Writer wr(buf);
    wr.begin(mp::ids::windows, h.tag);
    wr.slice(std::span<const mp::WindowDesc>(&w, 1));
    const std::uint32_t m = wr.finish();
    if (m == 0 || send_all(fd, buf.data(), m, deadline()) < 0) return 5;
  }
  char b[256];
  while (sys::read(fd, b, sizeof b) > 0) {
  }
  return 0;
}

// A connected socket whose other end a forked fake agent serves.
struct FakeAgentProcess {
  explicit FakeAgentProcess(const FakeAgent& fake) {
    int sv[2];
    sys::check(sys::socketpair(AF_UNIX, SOCK_STREAM, 0, sv), "socketpair");
    client_fd = sv[0];
    child.emplace([&] {
      (void)sys::close(sv[0]);
      return serve_fake_agent(sv[1], fake);
    });
    (void)sys::close(sv[1]);
  }
  std::optional<Child> child;
  int client_fd = -1;
};

TEST(AgentIdentity, HelloNamingAnotherPidIsNotTrusted) {
  g_cookie = 0x5eed'0000'0000'0000ull ^ static_cast<std::uint64_t>(::getpid());
  FakeAgent fake;
  fake.claimed_pid = ::getpid();  // the lie: "I am your parent" (which holds the same cookie)
  FakeAgentProcess agent(fake);
  Connection c = connect_memory(agent.client_fd);
  EXPECT_EQ(c.transport->remote_pid(), agent.child->pid()) << c.reason;
  EXPECT_NE(c.transport->remote_pid(), ::getpid()) << "the transport believed the Hello's pid";
  EXPECT_EQ(c.transport->kind(), "vm") << c.reason;  // the real sender holds the cookie
  // A write through the transport lands in the fake agent, never in this process's twin buffer.
  g_window[7] = 0;
  const std::uint8_t v = 0xEE;
  EXPECT_EQ(c.transport->write(c.transport->windows()[0].address + 7, &v, 1), 0);
  EXPECT_EQ(g_window[7], 0) << "the write landed in the process the Hello named";
  c.transport.reset();
  EXPECT_EQ(agent.child->wait(std::chrono::seconds(5)), 0);
}

TEST(AgentIdentity, NotAMemoryAgentIsAProtocolErrorInEveryTransport) {
  FakeAgent fake;
  fake.memory_agent = false;
  fake.claimed_pid = 1;
  {
    FakeAgentProcess peer(fake);
    try {
      SocketTransport t(peer.client_fd);
      ADD_FAILURE() << "SocketTransport accepted a peer that is not a memory agent";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), Errc::protocol) << e.what();
    }
    EXPECT_EQ(peer.child->wait(std::chrono::seconds(5)), 0);
  }
  FakeAgentProcess peer(fake);
  try {
    UringTransport t(peer.client_fd);
    ADD_FAILURE() << "UringTransport accepted a peer that is not a memory agent";
  } catch (const Error& e) {
    if (e.code() == Errc::unsupported) {
      (void)sys::close(peer.client_fd);
      (void)peer.child->wait(std::chrono::seconds(5));
      GTEST_SKIP() << "io_uring unavailable: " << e.what();
    }
    EXPECT_EQ(e.code(), Errc::protocol) << e.what();
  }
  EXPECT_EQ(peer.child->wait(std::chrono::seconds(5)), 0);
}

}  // namespace
}  // namespace shmkit::transport
