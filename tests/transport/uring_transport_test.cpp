// Tests the io_uring memory transport (UringTransport) against the same test agent as the shared
// transport suite, in a process started by fork and by exec: patterns of every size at unaligned
// addresses, writes, out-of-window and read-only refusals (the connection keeps serving); many
// requests in flight and many concurrent requesters with every result checked one by one;
// zero-copy reads into the transport's arena; a wait that times out abandons its request without
// the late reply ever reaching the caller's buffer; a peer killed with requests in flight
// completes every one of them with an error; and where io_uring is unavailable (seccomp in a
// forked child) a clear Errc::unsupported, with connect_memory(TransportChoice::uring) falling back to the socket
// transport. Tests that need io_uring skip themselves, with the reason, where it is missing.
#include <gtest/gtest.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/syscall.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <random>
#include <thread>
#include <vector>

#include "fake_agent.hpp"
#include "memory_agent_fixture.hpp"
#include "shmkit/transport/connect_memory.hpp"
#include "transport_checks.hpp"
#include "shmkit/sys/uring.hpp"
#include "shmkit/transport/socket_transport.hpp"
#include "shmkit/transport/uring_transport.hpp"

namespace shmkit::transport {
namespace {

using testing::AgentConfig;
using testing::AgentProcess;
using testing::pattern;

#define SKIP_WITHOUT_URING()                                                 \
  do {                                                                       \
    if (int probe_ = sys::uring_probe(); probe_ < 0) {                       \
      GTEST_SKIP() << sys::uring_unavailable_reason(probe_);                 \
    }                                                                        \
  } while (0)

class UringSuite : public ::testing::TestWithParam<bool> {
 protected:
  void SetUp() override {
    SKIP_WITHOUT_URING();
    agent_.emplace(GetParam(), AgentConfig{});
    t_ = std::make_unique<UringTransport>(agent_->connect());
    ASSERT_EQ(t_->kind(), "uring");
    ASSERT_EQ(t_->windows().size(), 3u);
    EXPECT_EQ(t_->windows()[0].length, testing::kRwSize);
    EXPECT_EQ(t_->remote_pid(), agent_->pid());
  }
  void TearDown() override {
    t_.reset();
    if (agent_) {
      EXPECT_EQ(agent_->finish(), 0);
    }
  }
  UringTransport& t() { return *t_; }
  std::uint64_t base(unsigned w) { return t().windows()[w].address; }

  testing::TransportChecks checks() { return testing::TransportChecks(t()); }

  std::optional<AgentProcess> agent_;
  std::unique_ptr<UringTransport> t_;
};

TEST_P(UringSuite, ReadsPatternsOfEverySizeAtUnalignedAddresses) {
  checks().reads_patterns_of_every_size_at_unaligned_addresses();
}

TEST_P(UringSuite, WritesLandExactlyAndReadBack) { checks().writes_land_exactly_and_read_back(); }

TEST_P(UringSuite, OutOfWindowRequestsAreRefusedAndTheTransportKeepsWorking) {
  checks().out_of_window_requests_are_refused_and_the_transport_keeps_working();
  EXPECT_FALSE(t().broken());
}

// 32 small reads in flight from one thread, each checked on its own.
TEST_P(UringSuite, ManyReadsInFlightEachCompletedOnce) {
  constexpr int kN = 256;
  std::vector<std::uint8_t> dst(kN * 64, 0);
  std::vector<UringRequest> reqs(kN);
  for (int round = 0; round < 3; ++round) {
    for (int i = 0; i < kN; ++i) {
      ASSERT_EQ(t().read_async(base(0) + 1000u * i + 3 * round, &dst[64u * i], 64, reqs[i]), 0);
    }
    for (int i = kN - 1; i >= 0; --i) ASSERT_EQ(t().wait(reqs[i], 5000), 0) << i;  // any order
    for (int i = 0; i < kN; ++i) {
      for (int k = 0; k < 64; ++k) {
        ASSERT_EQ(dst[64u * i + k], pattern(0, 1000u * i + 3 * round + k)) << i << ":" << k;
      }
    }
    EXPECT_EQ(t().wait(reqs[0], 0), -EINVAL);  // already waited for: never delivered twice
  }
  // The sends were batched: far fewer SENDMSGs than requests.
  EXPECT_LT(t().stats().sends, t().stats().requests / 4);
}

TEST_P(UringSuite, ConcurrentRequestersGetTheirOwnResults) {
  constexpr int kThreads = 4, kOps = 400;
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int th = 0; th < kThreads; ++th) {
    threads.emplace_back([&, th] {
      std::mt19937 rng(static_cast<unsigned>(th) + 1);
      constexpr int kDepth = 8;
      std::vector<std::vector<std::uint8_t>> bufs(kDepth);
      std::vector<std::uint64_t> offs(kDepth);
      std::vector<UringRequest> reqs(kDepth);
      auto issue = [&](int slot) {
        const std::size_t len = 1 + rng() % 9000;
        offs[slot] = rng() % (testing::kRwSize - len);
        bufs[slot].assign(len, 0);
        return t().read_async(base(0) + offs[slot], bufs[slot].data(), len, reqs[slot]);
      };
      for (int s = 0; s < kDepth; ++s) {
        if (int r = issue(s); r != 0) {
          ADD_FAILURE() << "issue " << r;
          ++failures;
        }
      }
      for (int done = 0; done < kOps; ++done) {
        const int s = done % kDepth;
        if (int r = t().wait(reqs[s], 5000); r != 0) {
          ADD_FAILURE() << "thread " << th << " op " << done << ": " << r;
          ++failures;
          return;
        }
        for (std::size_t k = 0; k < bufs[s].size(); ++k) {
          if (bufs[s][k] != pattern(0, offs[s] + k)) {
            ADD_FAILURE() << "thread " << th << " op " << done << " byte " << k << " of " << bufs[s].size();
            ++failures;
            break;
          }
        }
        if (done + kDepth < kOps) {
          if (int r = issue(s); r != 0) {
            ADD_FAILURE() << "issue " << r;
            ++failures;
          }
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(failures.load(), 0);
}

TEST_P(UringSuite, ZeroCopyReadsIntoTheArena) {
  SpanArena::Span s = t().allocate(1 << 20);
  ASSERT_TRUE(s);
  for (int round = 0; round < 8; ++round) {
    std::memset(s.data, 0, s.size);
    UringRequest r;
    ASSERT_EQ(t().read_async(base(0) + 4096u * round + 5, s.data, 1 << 20, r), 0);
    ASSERT_EQ(t().wait(r, 5000), 0);
    auto* p = reinterpret_cast<std::uint8_t*>(s.data);
    for (std::size_t i = 0; i < (1u << 20); ++i) {
      ASSERT_EQ(p[i], pattern(0, 4096u * round + 5 + i)) << i;
    }
  }
  // Replies go straight into the destination, except what arrived with their headers.
  EXPECT_GT(t().stats().direct_bytes, std::uint64_t{4} << 20);
  t().release(s);
}

INSTANTIATE_TEST_SUITE_P(Uring, UringSuite, ::testing::Bool(),
                         [](const auto& param_info) { return std::string(param_info.param ? "exec" : "fork"); });

// SIGSTOP is delivered asynchronously: wait until every thread of pid is stopped.
bool stop_and_wait(pid_t pid) {
  if (::kill(pid, SIGSTOP) != 0) return false;
  for (int i = 0; i < 500; ++i) {
    bool all = true;
    std::string dir = "/proc/" + std::to_string(pid) + "/task";
    for (const auto& e : std::filesystem::directory_iterator(dir)) {
      std::ifstream f(e.path() / "stat");
      std::string line;
      std::getline(f, line);
      auto close = line.rfind(')');
      if (close == std::string::npos || close + 2 >= line.size() || line[close + 2] != 'T') all = false;
    }
    if (all) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return false;
}

TEST(UringTransport, TimedOutWaitAbandonsWithoutLateWrites) {
  SKIP_WITHOUT_URING();
  AgentProcess agent(false);
  UringTransport t(agent.connect());
  ASSERT_TRUE(stop_and_wait(agent.pid()));
  std::vector<std::uint8_t> buf(4096, 0xEE);
  {
    UringRequest r;
    ASSERT_EQ(t.read_async(t.windows()[0].address, buf.data(), buf.size(), r), 0);
    EXPECT_EQ(t.wait(r, 200), -ETIMEDOUT);
  }
  ASSERT_EQ(::kill(agent.pid(), SIGCONT), 0);
  std::vector<std::uint8_t> other(64);
  ASSERT_EQ(t.read(t.windows()[0].address + 64, other.data(), other.size()), 0);  // still serves
  EXPECT_EQ(other[0], pattern(0, 64));
  EXPECT_EQ(t.stats().late_replies, 1u);
  for (auto b : buf) ASSERT_EQ(b, 0xEE);  // the late reply never reached the abandoned buffer
}

// A reply that had started arriving straight into the caller's arena buffer when wait() timed out
// (a read of 64 KiB or more): the rest of it must not land there once wait() has returned.
TEST(UringTransport, TimedOutArenaReadWhoseReplyHadStartedNeverWritesTheBuffer) {
  SKIP_WITHOUT_URING();
  int resume[2];
  ASSERT_EQ(sys::pipe2(resume, O_CLOEXEC), 0);
  testing::FakeAgent fake;
  fake.stall_after = 32 << 10;  // header + 32 KiB, then the agent waits for the test
  fake.resume_fd = resume[0];
  testing::FakeAgentProcess agent(fake);
  (void)sys::close(resume[0]);
  UringTransport t(agent.client_fd);
  constexpr std::size_t kLen = 256 << 10;
  SpanArena::Span buf = t.allocate(kLen);
  ASSERT_TRUE(buf);
  {
    UringRequest r;
    ASSERT_EQ(t.read_async(t.windows()[0].address, buf.data, kLen, r), 0);
    EXPECT_EQ(t.wait(r, 300), -ETIMEDOUT);
  }
  EXPECT_GE(t.stats().direct_bytes + t.stats().copied_bytes, 1u) << "the reply had not started";
  std::memset(buf.data, 0, kLen);  // the caller reuses its buffer
  const char go = 1;
  ASSERT_EQ(sys::write(resume[1], &go, 1), 1);  // the rest of the reply leaves the agent now
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  for (std::size_t i = 0; i < kLen; ++i) ASSERT_EQ(buf.data[i], std::byte{0}) << "late byte at " << i;
  std::uint8_t b = 0;
  EXPECT_LT(t.read(t.windows()[0].address, &b, 1), 0);  // the stream position was lost: broken
  t.release(buf);
  (void)sys::close(resume[1]);
}

TEST(UringTransport, PeerKilledWithRequestsInFlightCompletesAllWithAnError) {
  SKIP_WITHOUT_URING();
  AgentProcess agent(true);
  UringTransport t(agent.connect());
  ASSERT_TRUE(stop_and_wait(agent.pid()));  // requests pile up unanswered
  constexpr int kN = 64;
  std::vector<std::vector<std::uint8_t>> bufs(kN, std::vector<std::uint8_t>(100000));
  std::vector<UringRequest> reqs(kN);
  for (int i = 0; i < kN; ++i) {
    int r = i % 2 ? t.read_async(t.windows()[0].address, bufs[i].data(), bufs[i].size(), reqs[i])
                  : t.write_async(t.windows()[2].address, bufs[i].data(), bufs[i].size(), reqs[i]);
    ASSERT_EQ(r, 0);
  }
  agent.child().kill(SIGKILL);
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < kN; ++i) EXPECT_EQ(t.wait(reqs[i], 5000), -EPIPE) << i;
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(3));
  EXPECT_TRUE(t.broken());
  UringRequest later;
  EXPECT_EQ(t.read_async(t.windows()[0].address, bufs[0].data(), 8, later), -EPIPE);
  EXPECT_EQ(t.read(t.windows()[0].address, bufs[0].data(), 8), -EPIPE);
  EXPECT_EQ(agent.finish(), -SIGKILL);
}

// A seccomp filter that makes io_uring_setup fail with `err` (installed in a forked child).
bool block_io_uring(int err) {
  sock_filter filter[] = {
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, nr)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_io_uring_setup, 0, 1),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (static_cast<unsigned>(err) & SECCOMP_RET_DATA)),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
  };
  sock_fprog prog{static_cast<unsigned short>(std::size(filter)), filter};
  return prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0 && prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) == 0;
}

TEST(UringTransport, UnavailableIsUnsupportedAndFallsBackToTheSocketTransport) {
  AgentProcess agent(false);
  for (int err : {ENOSYS, EPERM}) {
    int fd = agent.connect();
    shmkit::testing::Child child([fd, err] {
      if (!block_io_uring(err)) return 3;
      try {
        UringTransport t(fd);
        return 4;
      } catch (const Error& e) {
        if (e.code() != Errc::unsupported || e.sys_errno() != err) return 5;
        if (std::string(e.what()).find("io_uring") == std::string::npos) return 6;
      }
      // The socket was left untouched: the fallback speaks to the agent on it.
      ConnectOptions co;
      co.choice = TransportChoice::uring;
      Connection conn = connect_memory(fd, co);
      if (conn.transport->kind() != "socket" ||
          conn.reason.find("socket: io_uring unavailable") != 0) return 7;
      MemoryTransport* m = conn.transport.get();
      std::uint8_t b[16];
      if (m->read(m->windows()[0].address + 10, b, sizeof b) != 0) return 8;
      for (int i = 0; i < 16; ++i) {
        if (b[i] != pattern(0, 10u + static_cast<unsigned>(i))) return 9;
      }
      return 0;
    });
    (void)sys::close(fd);
    EXPECT_EQ(child.wait(std::chrono::seconds(10)), 0) << "errno " << err;
  }
  EXPECT_EQ(agent.finish(), 0);
}

}  // namespace
}  // namespace shmkit::transport
