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

#include "fake_agent.hpp"
#include "shmkit/transport/connect_memory.hpp"
#include "shmkit/transport/uring_transport.hpp"

namespace shmkit::transport {
namespace {

using testing::FakeAgent;
using testing::FakeAgentProcess;
using testing::g_cookie;
using testing::g_window;

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
