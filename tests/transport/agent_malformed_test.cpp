// Tests the memory agent against hostile and broken clients: every frame of the malformed corpus
// (tests/transport/corpus/*.bin, written by make_corpus.py) is answered with an Error reply
// carrying the expected errno and then that connection alone is closed, while another client of
// the same agent process keeps being served; an unsupported message id gets EOPNOTSUPP and the
// connection stays usable; a client stalled in the middle of a frame does not hold up the others.
#include <gtest/gtest.h>
#include <sys/socket.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "memory_agent_fixture.hpp"
#include "shmkit/transport/memory_protocol.hpp"
#include "shmkit/transport/socket_transport.hpp"

namespace shmkit::transport {
namespace {

namespace fs = std::filesystem;
using testing::AgentProcess;

const Deadline kSoon() { return Deadline::after(std::chrono::seconds(5)); }

std::vector<fs::path> corpus_files() {
  fs::path dir = fs::path(__FILE__).parent_path() / "corpus";
  std::vector<fs::path> out;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.path().extension() == ".bin") out.push_back(e.path());
  std::sort(out.begin(), out.end());
  return out;
}

int errno_named(const std::string& n) {
  static const std::map<std::string, int> m{{"EPROTO", EPROTO},   {"EBADMSG", EBADMSG},
                                            {"EMSGSIZE", EMSGSIZE}, {"EOPNOTSUPP", EOPNOTSUPP},
                                            {"EFAULT", EFAULT},   {"EACCES", EACCES}};
  auto it = m.find(n);
  return it == m.end() ? -1 : it->second;
}

std::vector<std::byte> read_file(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::vector<char> c((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  std::vector<std::byte> out(c.size());
  std::memcpy(out.data(), c.data(), c.size());
  return out;
}

// A valid Hello exchange on a raw socket.
void handshake(int fd) {
  std::array<std::byte, 4096> buf{};
  wire::Hello h;
  h.pid = ::getpid();
  std::uint32_t n = wire::encode_hello(buf, 1, h);
  ASSERT_EQ(send_all(fd, buf.data(), n, kSoon()), 0);
  wire::Header rh;
  long got = recv_frame(fd, rh, buf, wire::kDefaultMaxMessage, kSoon());
  ASSERT_GT(got, 0);
  ASSERT_EQ(rh.id, wire::ids::hello);
}

// Everything the agent sends until it closes: must be one Error frame, then the end.
struct Outcome {
  int code = 0;        // the Error's code, 0 when none came
  bool closed = false; // the agent closed the connection afterwards
  std::string problem;
};
Outcome read_until_close(int fd) {
  Outcome o;
  std::vector<std::byte> all;
  for (;;) {
    std::byte buf[4096];
    int ev = sys::poll_one(fd, POLLIN, 5000);
    if (ev <= 0) {
      o.problem = "agent neither answered nor closed within 5 s";
      return o;
    }
    ssize_t n = sys::recv(fd, buf, sizeof buf, 0);
    if (n == 0 || n == -ECONNRESET) {
      // ECONNRESET: the agent closed with our unread bytes in its queue (it stops reading at a
      // malformed frame); the connection is still cleanly gone.
      o.closed = true;
      break;
    }
    if (n < 0) {
      o.problem = std::string("recv: ") + std::strerror(static_cast<int>(-n));
      return o;
    }
    all.insert(all.end(), buf, buf + n);
  }
  wire::Header h;
  if (all.size() < sizeof h) {
    o.problem = "no complete frame before the close";
    return o;
  }
  std::memcpy(&h, all.data(), sizeof h);
  if (h.id != wire::ids::error || h.length != all.size()) {
    o.problem = "expected exactly one Error frame, got id " + std::to_string(h.id) + " and " +
                std::to_string(all.size()) + " bytes";
    return o;
  }
  wire::ErrorView e;
  if (wire::decode_error(std::span<const std::byte>(all).subspan(wire::kHeaderSize), e) != wire::Status::ok) {
    o.problem = "malformed Error frame";
    return o;
  }
  o.code = e.code;
  return o;
}

void expect_good_client_served(SocketTransport& good) {
  std::vector<std::uint8_t> buf(10000);
  ASSERT_EQ(good.read(good.windows()[0].address + 3, buf.data(), buf.size()), 0);
  for (std::size_t i = 0; i < buf.size(); ++i) ASSERT_EQ(buf[i], testing::pattern(0, 3 + i)) << i;
}

TEST(AgentMalformed, EveryCorpusFrameGetsAnErrorAndACleanCloseWhileOthersAreServed) {
  auto files = corpus_files();
  ASSERT_GE(files.size(), 20u) << "corpus missing: run tests/transport/corpus/make_corpus.py";
  AgentProcess agent(/*exec=*/false);
  SocketTransport good(agent.connect());
  for (const auto& path : files) {
    const std::string stem = path.stem().string();
    SCOPED_TRACE(stem);
    const auto parts_end = stem.rfind("__");
    const int want = errno_named(stem.substr(parts_end + 2));
    ASSERT_GT(want, 0) << "unknown errno in file name";
    int fd = agent.connect();
    if (stem.rfind("after_hello__", 0) == 0) handshake(fd);
    auto bytes = read_file(path);
    ASSERT_EQ(send_all(fd, bytes.data(), bytes.size(), kSoon()), 0);
    ASSERT_EQ(sys::shutdown(fd, SHUT_WR), 0);
    Outcome o = read_until_close(fd);
    (void)sys::close(fd);
    EXPECT_EQ(o.problem, "");
    EXPECT_EQ(o.code, want) << "got " << std::strerror(o.code);
    EXPECT_TRUE(o.closed);
    expect_good_client_served(good);
  }
  AgentStats st = agent.stats();
  EXPECT_EQ(st.malformed, files.size());
  EXPECT_EQ(agent.finish(), 0);
}

TEST(AgentMalformed, UnsupportedIdIsAnErrorAndTheConnectionStaysUsable) {
  AgentProcess agent(/*exec=*/false);
  int fd = agent.connect();
  handshake(fd);
  // id 999 with a 100-byte payload the agent must skip.
  std::vector<std::byte> f(16 + 100, std::byte{0x55});
  wire::Header h{static_cast<std::uint32_t>(f.size()), 999, 0, 42};
  std::memcpy(f.data(), &h, sizeof h);
  ASSERT_EQ(send_all(fd, f.data(), f.size(), kSoon()), 0);
  std::array<std::byte, 4096> buf{};
  wire::Header rh;
  long n = recv_frame(fd, rh, buf, wire::kDefaultMaxMessage, kSoon());
  ASSERT_GT(n, 0);
  EXPECT_EQ(rh.id, wire::ids::error);
  EXPECT_EQ(rh.tag, 42u);
  wire::ErrorView e;
  ASSERT_EQ(wire::decode_error(std::span<const std::byte>(buf.data(), static_cast<std::size_t>(n)), e), wire::Status::ok);
  EXPECT_EQ(e.code, EOPNOTSUPP);
  EXPECT_EQ(e.request_id, 999);
  // Same connection: a Windows request still works.
  wire::Header wreq{wire::kHeaderSize, memproto::ids::windows, 0, 43};
  ASSERT_EQ(send_all(fd, &wreq, sizeof wreq, kSoon()), 0);
  n = recv_frame(fd, rh, buf, wire::kDefaultMaxMessage, kSoon());
  ASSERT_GT(n, 0);
  EXPECT_EQ(rh.id, memproto::ids::windows);
  EXPECT_EQ(rh.tag, 43u);
  (void)sys::close(fd);
  EXPECT_EQ(agent.finish(), 0);
}

TEST(AgentMalformed, OutOfWindowRawRequestsGetErrorsWithTheirTags) {
  AgentProcess agent(/*exec=*/false);
  int fd = agent.connect();
  handshake(fd);
  struct {
    wire::Header h;
    memproto::ReadRequest r;
  } req{{memproto::kReadRequestFrame, memproto::ids::read, 0, 77}, {0x10, 8}};
  ASSERT_EQ(send_all(fd, &req, sizeof req, kSoon()), 0);
  std::array<std::byte, 4096> buf{};
  wire::Header rh;
  long n = recv_frame(fd, rh, buf, wire::kDefaultMaxMessage, kSoon());
  ASSERT_GT(n, 0);
  EXPECT_EQ(rh.id, wire::ids::error);
  EXPECT_EQ(rh.tag, 77u);
  wire::ErrorView e;
  ASSERT_EQ(wire::decode_error(std::span<const std::byte>(buf.data(), static_cast<std::size_t>(n)), e), wire::Status::ok);
  EXPECT_EQ(e.code, EFAULT);
  // A read longer than one frame may carry is EINVAL, not a close.
  req.h.tag = 78;
  req.r = {0x10, std::uint64_t{1} << 40};
  ASSERT_EQ(send_all(fd, &req, sizeof req, kSoon()), 0);
  n = recv_frame(fd, rh, buf, wire::kDefaultMaxMessage, kSoon());
  ASSERT_GT(n, 0);
  ASSERT_EQ(wire::decode_error(std::span<const std::byte>(buf.data(), static_cast<std::size_t>(n)), e), wire::Status::ok);
  EXPECT_EQ(e.code, EINVAL);
  EXPECT_EQ(rh.tag, 78u);
  (void)sys::close(fd);
  EXPECT_EQ(agent.finish(), 0);
}

TEST(AgentMalformed, AClientStalledInsideAFrameDoesNotHoldUpOthers) {
  AgentProcess agent(/*exec=*/false);
  int stalled = agent.connect();
  handshake(stalled);
  wire::Header h{memproto::kReadRequestFrame, memproto::ids::read, 0, 5};
  ASSERT_EQ(send_all(stalled, &h, 5, kSoon()), 0);  // 5 bytes of a header, then silence
  SocketTransport good(agent.connect());
  auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < 20; ++i) expect_good_client_served(good);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(2));
  (void)sys::close(stalled);
  EXPECT_EQ(agent.finish(), 0);
}

}  // namespace
}  // namespace shmkit::transport
