// The shared memory-transport suite: every transport (socket with splicing, socket with plain
// copies, process_vm) against an agent in another process started by fork and by exec, reading
// and writing patterns of sizes from 0 bytes to many MiB at unaligned addresses, in every window
// kind (fd-backed, read-only anonymous, read-write anonymous); requests outside the exported
// windows and writes to a read-only window are refused, and the transport keeps working after.
#include <gtest/gtest.h>

#include <string>
#include <tuple>
#include <vector>

#include "memory_agent_fixture.hpp"
#include "transport_checks.hpp"
#include "shmkit/transport/connect_memory.hpp"

namespace shmkit::transport {
namespace {

using testing::AgentConfig;
using testing::AgentProcess;

enum class Kind { socket, socket_copy, vm };
const char* name(Kind k) {
  switch (k) {
    case Kind::socket: return "socket";
    case Kind::socket_copy: return "socket_copy";
    case Kind::vm: return "vm";
  }
  return "?";
}

class TransportSuite : public ::testing::TestWithParam<std::tuple<Kind, bool>> {
 protected:
  void SetUp() override {
    auto [kind, exec] = GetParam();
    AgentConfig cfg;
    cfg.zero_copy = kind != Kind::socket_copy;
    agent_.emplace(exec, cfg);
    ConnectOptions co;
    co.choice = kind == Kind::vm ? TransportChoice::vm_only : TransportChoice::socket_only;
    conn_ = connect_memory(agent_->connect(), co);
    ASSERT_EQ(conn_.transport->kind(), kind == Kind::vm ? "vm" : "socket") << conn_.reason;
    const auto& ws = conn_.transport->windows();
    ASSERT_EQ(ws.size(), 3u);
    EXPECT_EQ(ws[0].length, testing::kRwSize);
    EXPECT_EQ(ws[1].access, memproto::access_read);
    EXPECT_EQ(ws[2].access, memproto::access_read | memproto::access_write);
    EXPECT_EQ((ws[0].flags & memproto::window_zero_copy) != 0, kind != Kind::socket_copy);
  }
  void TearDown() override {
    conn_.transport.reset();
    if (agent_) {
      EXPECT_EQ(agent_->finish(), 0);
    }
  }
  MemoryTransport& t() { return *conn_.transport; }
  std::uint64_t base(unsigned w) { return t().windows()[w].address; }

  testing::TransportChecks checks() { return testing::TransportChecks(t()); }

  std::optional<AgentProcess> agent_;
  Connection conn_;
};

TEST_P(TransportSuite, ReadsPatternsOfEverySizeAtUnalignedAddresses) {
  checks().reads_patterns_of_every_size_at_unaligned_addresses();
  // The data path each transport is meant to take is the one it took.
  AgentStats st = agent_->stats();
  switch (std::get<0>(GetParam())) {
    case Kind::socket:
      EXPECT_GT(st.bytes_spliced, std::uint64_t{20} << 20);
      EXPECT_EQ(st.splice_fallbacks, 0u);
      break;
    case Kind::socket_copy:
      EXPECT_EQ(st.bytes_spliced, 0u);
      EXPECT_GT(st.bytes_copied, std::uint64_t{20} << 20);
      break;
    case Kind::vm:
      EXPECT_EQ(st.bytes_spliced + st.bytes_copied, 0u);  // the agent never saw the data
      break;
  }
}

TEST_P(TransportSuite, WritesLandExactlyAndReadBack) { checks().writes_land_exactly_and_read_back(); }

TEST_P(TransportSuite, OutOfWindowRequestsAreRefusedAndTheTransportKeepsWorking) {
  checks().out_of_window_requests_are_refused_and_the_transport_keeps_working();
}

INSTANTIATE_TEST_SUITE_P(AllTransports, TransportSuite,
                         ::testing::Combine(::testing::Values(Kind::socket, Kind::socket_copy, Kind::vm),
                                            ::testing::Bool()),
                         [](const auto& param_info) {
                           return std::string(name(std::get<0>(param_info.param))) +
                                  (std::get<1>(param_info.param) ? "_exec" : "_fork");
                         });

}  // namespace
}  // namespace shmkit::transport
