// The shared memory-transport suite: every transport (socket with splicing, socket with plain
// copies, process_vm) against an agent in another process started by fork and by exec, reading
// and writing patterns of sizes from 0 bytes to many MiB at unaligned addresses, in every window
// kind (fd-backed, read-only anonymous, read-write anonymous); requests outside the exported
// windows and writes to a read-only window are refused, and the transport keeps working after.
#include <gtest/gtest.h>

#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "memory_agent_fixture.hpp"
#include "shmkit/transport/connect_memory.hpp"

namespace shmkit::transport {
namespace {

using testing::AgentConfig;
using testing::AgentProcess;
using testing::pattern;

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

  // Reads [off, off+len) of window w and checks it against the expected bytes.
  void expect_window(unsigned w, std::uint64_t off, std::size_t len, const std::vector<std::uint8_t>* expected = nullptr) {
    std::vector<std::uint8_t> buf(len + 2, 0xEE);
    ASSERT_EQ(t().read(base(w) + off, buf.data() + 1, len), 0) << "window " << w << " off " << off << " len " << len;
    EXPECT_EQ(buf[0], 0xEE);
    EXPECT_EQ(buf[len + 1], 0xEE);  // nothing written outside the destination
    for (std::size_t i = 0; i < len; ++i) {
      std::uint8_t want = expected ? (*expected)[i] : pattern(w, off + i);
      if (buf[i + 1] != want) {
        ADD_FAILURE() << "window " << w << " byte " << off + i << ": got " << int(buf[i + 1]) << " want " << int(want);
        return;
      }
    }
  }

  std::optional<AgentProcess> agent_;
  Connection conn_;
};

TEST_P(TransportSuite, ReadsPatternsOfEverySizeAtUnalignedAddresses) {
  const std::size_t sizes[] = {0, 1, 7, 4095, 4096, 4097, 65539, 1 << 20, (5 << 20) + 123, 20 << 20};
  const std::uint64_t offsets[] = {0, 1, 4095, 13};
  for (std::size_t len : sizes) {
    for (std::uint64_t off : offsets) {
      if (off + len <= testing::kRwSize) expect_window(0, off, len);
    }
  }
  expect_window(1, 3, testing::kRoSize - 3);
  expect_window(2, 4097, 100000);
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

TEST_P(TransportSuite, WritesLandExactlyAndReadBack) {
  std::mt19937 rng(7);
  struct Case {
    unsigned window;
    std::uint64_t off;
    std::size_t len;
  };
  const Case cases[] = {{0, 5, 1}, {0, 4093, 9000}, {0, 1 << 20, 3 << 20}, {0, 77, (6 << 20) + 5},
                        {2, 0, 4096}, {2, 123, 1 << 20}, {0, 100, 0}};
  for (const auto& c : cases) {
    std::vector<std::uint8_t> data(c.len);
    for (auto& b : data) b = static_cast<std::uint8_t>(rng());
    ASSERT_EQ(t().write(base(c.window) + c.off, data.data(), c.len), 0) << c.off << "+" << c.len;
    expect_window(c.window, c.off, c.len, &data);
    // The bytes on either side are untouched.
    if (c.off > 0) expect_window(c.window, c.off - 1, 1);
    expect_window(c.window, c.off + c.len, 1);
    // Restore the pattern for the next case.
    std::vector<std::uint8_t> orig(c.len);
    testing::fill_pattern(orig.data(), c.window, c.off, c.len);
    ASSERT_EQ(t().write(base(c.window) + c.off, orig.data(), c.len), 0);
  }
}

TEST_P(TransportSuite, OutOfWindowRequestsAreRefusedAndTheTransportKeepsWorking) {
  std::vector<std::uint8_t> buf(8192);
  const std::uint64_t end0 = base(0) + testing::kRwSize;
  EXPECT_EQ(t().read(base(0) - 1, buf.data(), 2), -EFAULT);            // starts before
  EXPECT_EQ(t().read(end0 - 10, buf.data(), 11), -EFAULT);             // runs past the end
  EXPECT_EQ(t().read(end0, buf.data(), 1), -EFAULT);                   // just past
  EXPECT_EQ(t().read(0, buf.data(), 16), -EFAULT);                     // address 0
  EXPECT_EQ(t().read(~std::uint64_t{0} - 4, buf.data(), 16), -EFAULT); // wraps around
  EXPECT_EQ(t().write(end0 - 1, buf.data(), 2), -EFAULT);
  EXPECT_EQ(t().write(base(1) + 10, buf.data(), 10), -EACCES);         // read-only window
  // A multi-chunk read whose last chunk leaves the window fails as a whole.
  std::vector<std::uint8_t> big(testing::kRwSize);
  EXPECT_EQ(t().read(base(0) + 4096, big.data(), testing::kRwSize), -EFAULT);
  // The read-only window was not modified, and the connection still serves.
  expect_window(1, 0, 4096);
  expect_window(0, testing::kRwSize - 4096, 4096);
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
