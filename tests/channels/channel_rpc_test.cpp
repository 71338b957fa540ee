// Tests the shared-memory RPC channel (transport/channel.hpp) between forked processes: the Hello
// handshake (served ids, maximum frame), round trips with payloads from 0 bytes to the maximum,
// unsupported ids, handler errors and malformed frames answered with Error replies on a
// connection that keeps working, several clients at once, and death: the server SIGKILLed in the middle of a call (the
// client gets peer_closed promptly), a client SIGKILLed in the middle of a call (its window is
// reclaimed and the server keeps serving), and no server at all.
#include <gtest/gtest.h>
#include <sys/mman.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <thread>
#include <vector>

#include "shmkit/sys/syscall.hpp"
#include "shmkit/channels/channel.hpp"
#include "testing.hpp"

using namespace shmkit;
using namespace shmkit::transport;
using namespace std::chrono_literals;
using shmkit::testing::Child;

namespace {

using shmkit::testing::SharedMem;

constexpr wire::MsgId kEcho = 40, kFail = 41, kSlow = 42, kSum = 43;
constexpr std::uint32_t kMax = 64 * 1024;

// Shared flags between the test and its processes, in front of the channel.
struct Flags {
  std::atomic<bool> stop{false};
  std::atomic<std::uint32_t> slow_entered{0};
  std::atomic<std::uint32_t> clients_gone{0};  // on_client_gone calls in the server
};

struct Fixture {
  explicit Fixture(std::uint32_t windows)
      : mem(4096 + Channel::required_bytes(windows, kMax)),
        flags(new (mem.base) Flags),
        ch(Channel::create(mem.base + 4096, mem.size - 4096, windows, kMax)) {}
  // A server process: echo, a handler that fails with ERANGE, one that sleeps (for kill tests),
  // one that sums u32s with the wire Reader.
  Child start_server() {
    Child c([this] {
      ChannelServer srv(Channel::attach(mem.base + 4096, mem.size - 4096));
      srv.handle(kEcho, [](const Request& r, wire::Writer& w) {
        w.bytes(r.payload);
        return 0;
      });
      srv.handle(kFail, [](const Request&, wire::Writer&) { return ERANGE; });
      srv.handle(kSlow, [this](const Request&, wire::Writer&) {
        flags->slow_entered.fetch_add(1);
        std::this_thread::sleep_for(300ms);
        return 0;
      });
      srv.handle(kSum, [](const Request& r, wire::Writer& w) {
        wire::Reader rd(r.payload);
        wire::SliceView<std::uint32_t> v;
        if (!rd.slice(v) || rd.finish() != wire::Status::ok) return EPROTO;
        std::uint64_t s = 0;
        for (std::uint32_t i = 0; i < v.size(); ++i) s += v[i];
        w.u64(s);
        return 0;
      });
      srv.on_client_gone([this](std::uint32_t) { flags->clients_gone.fetch_add(1); });
      srv.start();
      srv.serve(flags->stop);
      return 0;
    });
    auto until = sys::Clock::now() + 5s;
    while (ch.control()->server_up.load() == 0 && sys::Clock::now() < until) std::this_thread::sleep_for(1ms);
    return c;
  }
  void stop_server(Child& c) {
    flags->stop.store(true);
    ch.control()->doorbell.notify_all();
    EXPECT_EQ(c.wait(10s), 0);
  }
  SharedMem mem;
  Flags* flags;
  Channel ch;
};

std::vector<std::byte> pattern(std::size_t n, unsigned seed) {
  std::vector<std::byte> v(n);
  for (std::size_t i = 0; i < n; ++i) v[i] = static_cast<std::byte>((i * 13 + seed) & 0xff);
  return v;
}

TEST(ChannelRpc, HandshakeAndRoundTripsFromZeroToMax) {
  Fixture f(2);
  Child server = f.start_server();
  ChannelClient cl = ChannelClient::connect(f.ch, sys::Clock::now() + 5s);
  EXPECT_EQ(cl.max_message(), kMax);
  EXPECT_TRUE(cl.server_hello().serves(kEcho));
  EXPECT_TRUE(cl.server_hello().serves(kSum));
  EXPECT_FALSE(cl.server_hello().serves(99));
  const std::size_t max_payload = kMax - wire::kHeaderSize;
  for (std::size_t n : {std::size_t{0}, std::size_t{1}, std::size_t{15}, std::size_t{16}, std::size_t{64},
                        std::size_t{4095}, std::size_t{4096}, max_payload - 1, max_payload}) {
    auto req = pattern(n, static_cast<unsigned>(n));
    CallResult r = cl.call(kEcho, req, sys::Clock::now() + 5s);
    ASSERT_EQ(r.status, ChannelStatus::ok) << n;
    ASSERT_EQ(r.reply.size(), n);
    ASSERT_TRUE(std::equal(r.reply.begin(), r.reply.end(), req.begin())) << n;
  }
  std::vector<std::byte> too_big(max_payload + 1);
  EXPECT_EQ(cl.call(kEcho, too_big).status, ChannelStatus::too_large);
  // Marshalled request written in place, reply decoded with the wire Reader.
  wire::Writer w(cl.request_payload());
  std::vector<std::uint32_t> nums{1, 2, 3, 1000000};
  w.slice(std::span<const std::uint32_t>(nums));
  ASSERT_TRUE(w.ok());
  CallResult r = cl.call_in_place(kSum, w.size(), sys::Clock::now() + 5s);
  ASSERT_EQ(r.status, ChannelStatus::ok);
  wire::Reader rd(r.reply);
  std::uint64_t sum = 0;
  ASSERT_TRUE(rd.u64(sum));
  EXPECT_EQ(sum, 1000006u);
  for (int i = 0; i < 10000; ++i) {
    std::uint64_t v = static_cast<std::uint64_t>(i) * 7;
    CallResult e = cl.call(kEcho, std::as_bytes(std::span(&v, 1)));
    ASSERT_EQ(e.status, ChannelStatus::ok);
    std::uint64_t back;
    std::memcpy(&back, e.reply.data(), 8);
    ASSERT_EQ(back, v);
  }
  cl.disconnect();
  f.stop_server(server);
}

TEST(ChannelRpc, UnsupportedIdsAndHandlerErrorsGetErrorReplies) {
  Fixture f(1);
  Child server = f.start_server();
  ChannelClient cl = ChannelClient::connect(f.ch, sys::Clock::now() + 5s);
  CallResult r = cl.call(99, {}, sys::Clock::now() + 5s);
  EXPECT_EQ(r.status, ChannelStatus::error_reply);
  EXPECT_EQ(r.error_code, EOPNOTSUPP);
  r = cl.call(kFail, {}, sys::Clock::now() + 5s);
  EXPECT_EQ(r.status, ChannelStatus::error_reply);
  EXPECT_EQ(r.error_code, ERANGE);
  // A malformed request payload: the handler's Reader refuses it.
  std::byte junk[3]{};
  r = cl.call(kSum, junk, sys::Clock::now() + 5s);
  EXPECT_EQ(r.status, ChannelStatus::error_reply);
  EXPECT_EQ(r.error_code, EPROTO);
  // The connection still works.
  auto req = pattern(100, 1);
  r = cl.call(kEcho, req, sys::Clock::now() + 5s);
  ASSERT_EQ(r.status, ChannelStatus::ok);
  EXPECT_EQ(r.reply.size(), 100u);
  cl.disconnect();
  f.stop_server(server);
}

// A hostile or broken client writes frames the API would never produce straight into its window:
// the server answers each with an Error frame and keeps serving.
TEST(ChannelRpc, MalformedFramesInTheWindowGetErrorReplies) {
  Fixture f(1);
  Child server = f.start_server();
  ChannelClient cl = ChannelClient::connect(f.ch, sys::Clock::now() + 5s);
  const std::uint32_t idx = cl.window_index();
  ChannelWindow& w = f.ch.window(idx);
  auto raw_exchange = [&](wire::Header h) {
    std::memcpy(f.ch.request_area(idx), &h, sizeof h);
    w.turn.store(ChannelWindow::kServerTurn);
    f.ch.control()->doorbell.notify_all();
    auto until = sys::Clock::now() + 5s;
    while (w.turn.load() != ChannelWindow::kClientTurn && sys::Clock::now() < until) std::this_thread::yield();
    wire::Header rh;
    std::memcpy(&rh, f.ch.reply_area(idx), sizeof rh);
    EXPECT_EQ(rh.id, wire::ids::error);
    wire::ErrorView ev;
    EXPECT_EQ(wire::decode_error({f.ch.reply_area(idx) + wire::kHeaderSize, wire::payload_size(rh)}, ev),
              wire::Status::ok);
    return ev.code;
  };
  EXPECT_EQ(raw_exchange({kMax + 1, kEcho, 0, 5}), EMSGSIZE);          // longer than the window
  EXPECT_EQ(raw_exchange({3, kEcho, 0, 6}), EPROTO);                   // shorter than a header
  EXPECT_EQ(raw_exchange({wire::kHeaderSize, kEcho, 1, 7}), EPROTO);   // reserved flags set
  EXPECT_EQ(raw_exchange({wire::kHeaderSize + 2, wire::ids::hello, 0, 8}), EPROTO);  // bad hello
  auto req = pattern(64, 4);
  CallResult r = cl.call(kEcho, req, sys::Clock::now() + 5s);
  ASSERT_EQ(r.status, ChannelStatus::ok);
  EXPECT_TRUE(std::equal(r.reply.begin(), r.reply.end(), req.begin()));
  cl.disconnect();
  f.stop_server(server);
}

TEST(ChannelRpc, SeveralClientProcessesAtOnce) {
  constexpr int kClients = 3, kCalls = 3000;
  Fixture f(kClients);
  Child server = f.start_server();
  std::vector<Child> clients;
  for (int c = 0; c < kClients; ++c)
    clients.emplace_back([&f, c] {
      ChannelClient cl = ChannelClient::connect(f.ch, sys::Clock::now() + 5s);
      cl.set_spin(std::chrono::microseconds(25));
      for (int i = 0; i < kCalls; ++i) {
        auto req = pattern(static_cast<std::size_t>(i % 300), static_cast<unsigned>(c * 1000 + i));
        CallResult r = cl.call(kEcho, req, sys::Clock::now() + 10s);
        if (r.status != ChannelStatus::ok || r.reply.size() != req.size() ||
            !std::equal(r.reply.begin(), r.reply.end(), req.begin()))
          return 1;
      }
      return 0;
    });
  for (auto& c : clients) EXPECT_EQ(c.wait(30s), 0);
  f.stop_server(server);
}

TEST(ChannelRpc, NoServerAndStoppedServer) {
  Fixture f(1);
  EXPECT_THROW(ChannelClient::connect(f.ch, sys::Clock::now() + 1s), Error);
  Child server = f.start_server();
  ChannelClient cl = ChannelClient::connect(f.ch, sys::Clock::now() + 5s);
  ASSERT_EQ(cl.call(kEcho, {}).status, ChannelStatus::ok);
  f.stop_server(server);
  auto t0 = sys::Clock::now();
  EXPECT_EQ(cl.call(kEcho, {}, t0 + 5s).status, ChannelStatus::peer_closed);
  EXPECT_LT(sys::Clock::now() - t0, 1s);
}

TEST(ChannelRpc, ServerKilledMidCallGivesPeerClosedPromptly) {
  Fixture f(1);
  Child server = f.start_server();
  ChannelClient cl = ChannelClient::connect(f.ch, sys::Clock::now() + 5s);
  std::thread killer([&] {
    while (f.flags->slow_entered.load() == 0) std::this_thread::sleep_for(1ms);
    server.kill(SIGKILL);
  });
  auto t0 = sys::Clock::now();
  CallResult r = cl.call(kSlow, {}, t0 + 20s);
  auto took = sys::Clock::now() - t0;
  killer.join();
  EXPECT_EQ(r.status, ChannelStatus::peer_closed);
  EXPECT_LT(took, 250ms) << "the handler sleeps 300 ms; death must be seen before it would reply";
  EXPECT_EQ(server.wait(5s), -SIGKILL);
  EXPECT_EQ(cl.call(kEcho, {}).status, ChannelStatus::peer_closed);
  // A new server takes the channel over (the dead one's lock comes back with owner_died) and a new
  // client connects and is served.
  Child server2 = f.start_server();
  ChannelClient cl2 = ChannelClient::connect(f.ch, sys::Clock::now() + 5s);
  auto req = pattern(64, 3);
  CallResult r2 = cl2.call(kEcho, req, sys::Clock::now() + 5s);
  ASSERT_EQ(r2.status, ChannelStatus::ok);
  cl2.disconnect();
  f.stop_server(server2);
}

TEST(ChannelRpc, ClientKilledMidCallLeavesAServedReclaimableWindow) {
  Fixture f(1);  // one window: the next client must get the dead client's window back
  Child server = f.start_server();
  Child client([&f] {
    ChannelClient cl = ChannelClient::connect(f.ch, sys::Clock::now() + 5s);
    (void)cl.call(kSlow, {}, sys::Clock::now() + 20s);
    return 7;
  });
  auto until = sys::Clock::now() + 5s;
  while (f.flags->slow_entered.load() == 0 && sys::Clock::now() < until) std::this_thread::sleep_for(1ms);
  client.kill(SIGKILL);
  EXPECT_EQ(client.wait(5s), -SIGKILL);
  // The server learns of it (by probing the robust client_lock when idle) and frees the window.
  until = sys::Clock::now() + 3s;
  while (f.flags->clients_gone.load() == 0 && sys::Clock::now() < until) std::this_thread::sleep_for(1ms);
  EXPECT_EQ(f.flags->clients_gone.load(), 1u);
  // The window is free again; connect() takes it, waits for the slow reply to land if it has not
  // yet, and handshakes.
  ChannelClient cl = ChannelClient::connect(f.ch, sys::Clock::now() + 5s);
  auto req = pattern(1000, 9);
  CallResult r = cl.call(kEcho, req, sys::Clock::now() + 5s);
  ASSERT_EQ(r.status, ChannelStatus::ok);
  EXPECT_TRUE(std::equal(r.reply.begin(), r.reply.end(), req.begin()));
  cl.disconnect();
  f.stop_server(server);
}

}  // namespace
