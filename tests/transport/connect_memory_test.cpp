// Tests connect_memory()'s choice between the process_vm and socket transports: a client of the
// same user picks vm; a client the kernel refuses process_vm_readv to (EPERM: as root we drop to
// another uid in the client process; as another user the agent makes itself non-dumpable) falls
// back to the socket transport, says why, and still reads and writes correctly; vm_only refuses.
#include <gtest/gtest.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "memory_agent_fixture.hpp"
#include "test_syscalls.hpp"
#include "shmkit/transport/connect_memory.hpp"

namespace shmkit::transport {
namespace {

using shmkit::testing::Child;
using testing::AgentConfig;
using testing::AgentProcess;

TEST(ConnectMemory, SameUserPicksVm) {
  AgentProcess agent(false);
  Connection c = connect_memory(agent.connect());
  EXPECT_EQ(c.transport->kind(), "vm");
  EXPECT_EQ(c.reason.rfind("vm:", 0), 0u) << c.reason;
  EXPECT_EQ(c.transport->remote_pid(), agent.pid());
  std::vector<std::uint8_t> buf(4096);
  ASSERT_EQ(c.transport->read(c.transport->windows()[0].address + 1, buf.data(), buf.size()), 0);
  EXPECT_EQ(buf[0], testing::pattern(0, 1));
  c.transport.reset();
  EXPECT_EQ(agent.finish(), 0);
}

// In a child process that the kernel will refuse process_vm_readv on the agent: connect, check
// the fallback and use it. Exit code 0 = all good; others name the failed step.
int refused_client(int fd, int second_fd) {
  if (::geteuid() == 0) {
    // Root has CAP_SYS_PTRACE, which overrides both uid checks and non-dumpability: become
    // another user (dropping every capability) so the kernel refuses like for an ordinary user.
    if (::shmkit::testing::setresgid(65534, 65534, 65534) != 0 ||
        ::shmkit::testing::setresuid(65534, 65534, 65534) != 0)
      return 10;
  }
  Connection c = connect_memory(fd);
  if (c.transport->kind() != "socket") return 11;
  if (c.reason.find("socket: process_vm_readv") != 0) return 12;
  if (c.reason.find("Operation not permitted") == std::string::npos) return 13;
  const std::uint64_t base = c.transport->windows()[0].address;
  std::vector<std::uint8_t> buf(1 << 20);
  if (c.transport->read(base + 7, buf.data(), buf.size()) != 0) return 14;
  for (std::size_t i = 0; i < buf.size(); ++i)
    if (buf[i] != testing::pattern(0, 7 + i)) return 15;
  std::vector<std::uint8_t> data(5000, 0xA5);
  if (c.transport->write(base + 100, data.data(), data.size()) != 0) return 16;
  if (c.transport->read(base + 100, buf.data(), data.size()) != 0) return 17;
  for (std::size_t i = 0; i < data.size(); ++i)
    if (buf[i] != 0xA5) return 18;
  // vm_only says no, with the reason.
  try {
    ConnectOptions co;
    co.choice = TransportChoice::vm_only;
    (void)connect_memory(second_fd, co);
    return 19;
  } catch (const Error& e) {
    if (e.code() != Errc::permission_denied) return 20;
  }
  return 0;
}

void eperm_falls_back(bool exec_agent) {
  AgentConfig cfg;
  cfg.dumpable = ::geteuid() == 0;  // as an ordinary user the agent's non-dumpability is the refusal
  AgentProcess agent(exec_agent, cfg);
  int fd = agent.connect();
  int second = agent.connect();  // for the vm_only attempt (a connection does one handshake)
  Child client([&] { return refused_client(fd, second); });
  (void)sys::close(fd);
  (void)sys::close(second);
  EXPECT_EQ(client.wait(std::chrono::seconds(15)), 0);
  EXPECT_EQ(agent.finish(), 0);
}

TEST(ConnectMemory, EpermFallsBackToSocketForkedAgent) { eperm_falls_back(false); }
TEST(ConnectMemory, EpermFallsBackToSocketExecedAgent) { eperm_falls_back(true); }

TEST(ConnectMemory, SocketOnlyIsHonoured) {
  AgentProcess agent(false);
  ConnectOptions co;
  co.choice = TransportChoice::socket_only;
  Connection c = connect_memory(agent.connect(), co);
  EXPECT_EQ(c.transport->kind(), "socket");
  c.transport.reset();
  EXPECT_EQ(agent.finish(), 0);
}

// The selector offers io_uring (it used to try only vm and socket, whatever the README said).
TEST(ConnectMemory, UringChoiceGivesTheUringTransport) {
  AgentProcess agent(false);
  ConnectOptions co;
  co.choice = TransportChoice::uring;
  Connection c = connect_memory(agent.connect(), co);
  if (c.transport->kind() == "socket") {
    // Only where the kernel refuses io_uring, and the reason says so.
    EXPECT_NE(c.reason.find("io_uring unavailable"), std::string::npos) << c.reason;
  } else {
    EXPECT_EQ(c.transport->kind(), "uring") << c.reason;
  }
  std::vector<std::uint8_t> buf(100000);
  ASSERT_EQ(c.transport->read(c.transport->windows()[0].address + 3, buf.data(), buf.size()), 0);
  for (std::size_t i = 0; i < buf.size(); ++i) ASSERT_EQ(buf[i], testing::pattern(0, 3 + i)) << i;
  c.transport.reset();
  EXPECT_EQ(agent.finish(), 0);
}

TEST(ConnectMemory, HandshakeWithSomethingThatIsNotAnAgentFails) {
  int sv[2];
  ASSERT_EQ(sys::socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
  Child junk([&] {
    (void)sys::close(sv[0]);
    const char garbage[] = "HTTP/1.1 400 Bad Request\r\n\r\n";
    (void)sys::write(sv[1], garbage, sizeof garbage);
    char b[256];
    while (sys::read(sv[1], b, sizeof b) > 0) {
    }
    return 0;
  });
  (void)sys::close(sv[1]);
  SocketTransportOptions o;
  o.io_timeout = std::chrono::milliseconds(500);
  ConnectOptions co;
  co.socket = o;
  try {
    (void)connect_memory(sv[0], co);
    ADD_FAILURE() << "connected to garbage";
  } catch (const Error& e) {
    EXPECT_TRUE(e.code() == Errc::protocol || e.code() == Errc::timed_out) << e.what();
  }
  EXPECT_EQ(junk.wait(std::chrono::seconds(5)), 0);
}

}  // namespace
}  // namespace shmkit::transport
