// rpc_roundtrip_64B: one iteration = a 64-byte request from this process and a 64-byte reply from a
// forked partner process (real time per round trip). Variants:
//   shmkit_channel       transport::ChannelClient::call to a ChannelServer (wire frames in a shared
//                        packet window; spin, then futex)
//   unix_socketpair      write 64 / read 64 on a SOCK_STREAM socketpair, both ways
//   boost_message_queue  boost::interprocess::message_queue, one queue each way
//   futex_limit          a bare futex hand-off both ways (always sleeps: FUTEX_WAIT / FUTEX_WAKE)
//   spin_limit           two atomics spun on, 64 bytes copied each way (the physical limit)
// Goal: shmkit_channel <= 0.15 x unix_socketpair.
//
// Each run forks the partner before the timed region and reaps it after; the partner serves
// exactly the number of round trips the run makes, then exits.
#include <benchmark/benchmark.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>

#include <atomic>
#include <boost/interprocess/ipc/message_queue.hpp>
#include <cstdint>
#include <cstring>
#include <new>
#include <string>

#include "shmkit/sys/futex_word.hpp"
#include "cpu_load.hpp"
#include "partner_process.hpp"
#include "shmkit/sys/proc_control.hpp"
#include "shmkit/sys/syscall.hpp"
#include "shmkit/channels/channel.hpp"

namespace {

namespace sys = shmkit::sys;
namespace tr = shmkit;  // the channel types live in namespace shmkit since the transport split
constexpr std::size_t kMsg = 64;

using shmkit::bench::fork_partner;
using shmkit::bench::full_io;
using shmkit::bench::reap_ok;
using shmkit::bench::SharedMap;

// ---- shmkit_channel ------------------------------------------------------------------------------

constexpr shmkit::transport::wire::MsgId kEchoId = 32;

void bm_shmkit_channel(benchmark::State& state) {
  const std::size_t bytes = 4096 + tr::Channel::required_bytes(1, shmkit::transport::wire::kMinMaxMessage);
  SharedMap mem(bytes);
  if (mem.get() == nullptr) return state.SkipWithError("mmap failed");
  auto* stop = new (mem.get()) std::atomic<bool>(false);
  tr::Channel ch = tr::Channel::create(mem.get() + 4096, bytes - 4096, 1, shmkit::transport::wire::kMinMaxMessage);
  pid_t pid = fork_partner([&] {
    tr::ChannelServer srv(ch);
    srv.handle(kEchoId, [](const tr::Request& r, shmkit::transport::wire::Writer& w) {
      w.bytes(r.payload);  // a 64-byte reply
      return 0;
    });
    srv.start();
    srv.serve(*stop);
    return 0;
  });
  if (pid < 0) return state.SkipWithError("fork failed");
  while (ch.control()->server_up.load(std::memory_order_acquire) == 0) sys::cpu_relax();
  bool ok = true;
  {
    tr::ChannelClient cl = tr::ChannelClient::connect(ch);
    std::byte req[kMsg];
    std::memset(req, 0x5a, sizeof req);
    for (auto _ : state) {
      tr::CallResult r = cl.call(kEchoId, req);
      if (r.status != tr::ChannelStatus::ok || r.reply.size() != kMsg) {
        ok = false;
        break;
      }
      benchmark::DoNotOptimize(r.reply.data());
    }
  }
  stop->store(true, std::memory_order_release);
  ch.control()->doorbell.notify_all();
  if (!reap_ok(pid, ok) || !ok) state.SkipWithError("channel round trip failed");
}

// ---- unix_socketpair -------------------------------------------------------------------------

void bm_unix_socketpair(benchmark::State& state) {
  int sv[2];
  if (sys::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) return state.SkipWithError("socketpair");
  const std::int64_t n = static_cast<std::int64_t>(state.max_iterations);
  pid_t pid = fork_partner([&] {
    (void)sys::close(sv[0]);
    std::byte buf[kMsg];
    for (std::int64_t i = 0; i < n; ++i)
      if (!full_io(sv[1], buf, kMsg, false) || !full_io(sv[1], buf, kMsg, true)) return 1;
    return 0;
  });
  if (pid < 0) return state.SkipWithError("fork failed");
  (void)sys::close(sv[1]);
  std::byte buf[kMsg];
  std::memset(buf, 0x5a, sizeof buf);
  bool ok = true;
  for (auto _ : state)
    if (!full_io(sv[0], buf, kMsg, true) || !full_io(sv[0], buf, kMsg, false)) {
      ok = false;
      break;
    }
  (void)sys::close(sv[0]);
  if (!reap_ok(pid, ok) || !ok) state.SkipWithError("socketpair round trip failed");
}

// ---- boost_message_queue -----------------------------------------------------------------------

void bm_boost_message_queue(benchmark::State& state) {
  namespace bip = boost::interprocess;
  const std::string req_name = "shmkit-bench-rpc-req-" + std::to_string(sys::getpid());
  const std::string rep_name = "shmkit-bench-rpc-rep-" + std::to_string(sys::getpid());
  bip::message_queue::remove(req_name.c_str());
  bip::message_queue::remove(rep_name.c_str());
  const std::int64_t n = static_cast<std::int64_t>(state.max_iterations);
  bool ok = true;
  {
    bip::message_queue req(bip::create_only, req_name.c_str(), 16, kMsg);
    bip::message_queue rep(bip::create_only, rep_name.c_str(), 16, kMsg);
    pid_t pid = fork_partner([&] {
      std::byte buf[kMsg];
      std::size_t got;
      unsigned prio;
      for (std::int64_t i = 0; i < n; ++i) {
        req.receive(buf, kMsg, got, prio);
        rep.send(buf, kMsg, 0);
      }
      return 0;
    });
    if (pid < 0) {
      ok = false;
    } else {
      std::byte buf[kMsg];
      std::memset(buf, 0x5a, sizeof buf);
      std::size_t got;
      unsigned prio;
      for (auto _ : state) {
        req.send(buf, kMsg, 0);
        rep.receive(buf, kMsg, got, prio);
      }
      ok = reap_ok(pid);
    }
  }
  bip::message_queue::remove(req_name.c_str());
  bip::message_queue::remove(rep_name.c_str());
  if (!ok) state.SkipWithError("boost message_queue round trip failed");
}

// ---- futex_limit and spin_limit ------------------------------------------------------------------

struct PingPong {
  alignas(64) std::atomic<std::uint32_t> turn{0};  // 0 = client's turn, 1 = server's turn
  alignas(64) std::byte req[kMsg];
  alignas(64) std::byte rep[kMsg];
};

void bm_futex_limit(benchmark::State& state) {
  SharedMap mem(sizeof(PingPong));
  if (mem.get() == nullptr) return state.SkipWithError("mmap failed");
  auto* pp = new (mem.get()) PingPong;
  const std::int64_t n = static_cast<std::int64_t>(state.max_iterations);
  pid_t pid = fork_partner([&] {
    for (std::int64_t i = 0; i < n; ++i) {
      while (pp->turn.load(std::memory_order_acquire) != 1) (void)sys::futex_wait(pp->turn, 0);
      std::memcpy(pp->rep, pp->req, kMsg);
      pp->turn.store(0, std::memory_order_release);
      sys::futex_wake(pp->turn, 1);
    }
    return 0;
  });
  if (pid < 0) return state.SkipWithError("fork failed");
  for (auto _ : state) {
    std::memset(pp->req, 1, kMsg);
    pp->turn.store(1, std::memory_order_release);
    sys::futex_wake(pp->turn, 1);
    while (pp->turn.load(std::memory_order_acquire) != 0) (void)sys::futex_wait(pp->turn, 1);
    benchmark::DoNotOptimize(pp->rep[0]);
  }
  if (!reap_ok(pid)) state.SkipWithError("partner failed");
}

void bm_spin_limit(benchmark::State& state) {
  SharedMap mem(sizeof(PingPong));
  if (mem.get() == nullptr) return state.SkipWithError("mmap failed");
  auto* pp = new (mem.get()) PingPong;
  const std::int64_t n = static_cast<std::int64_t>(state.max_iterations);
  pid_t pid = fork_partner([&] {
    for (std::int64_t i = 0; i < n; ++i) {
      while (pp->turn.load(std::memory_order_acquire) != 1) sys::cpu_relax();
      std::memcpy(pp->rep, pp->req, kMsg);
      pp->turn.store(0, std::memory_order_release);
    }
    return 0;
  });
  if (pid < 0) return state.SkipWithError("fork failed");
  for (auto _ : state) {
    std::memset(pp->req, 1, kMsg);
    pp->turn.store(1, std::memory_order_release);
    while (pp->turn.load(std::memory_order_acquire) != 0) sys::cpu_relax();
    benchmark::DoNotOptimize(pp->rep[0]);
  }
  if (!reap_ok(pid)) state.SkipWithError("partner failed");
}

}  // namespace

SHMKIT_TWO_PROCESS_BENCHMARK(bm_shmkit_channel, "rpc_roundtrip_64B/shmkit_channel");
SHMKIT_TWO_PROCESS_BENCHMARK(bm_unix_socketpair, "rpc_roundtrip_64B/unix_socketpair");
SHMKIT_TWO_PROCESS_BENCHMARK(bm_boost_message_queue, "rpc_roundtrip_64B/boost_message_queue");
SHMKIT_TWO_PROCESS_BENCHMARK(bm_futex_limit, "rpc_roundtrip_64B/futex_limit");
SHMKIT_TWO_PROCESS_BENCHMARK(bm_spin_limit, "rpc_roundtrip_64B/spin_limit");
