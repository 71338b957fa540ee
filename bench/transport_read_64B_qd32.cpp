// Family transport_read_64B_qd32 (BENCHMARKS.md): 64-byte reads of another process's memory;
// items/s.
//   uring        shmkit UringTransport with 32 reads in flight: one iteration issues 32 reads
//                (read_async) at 32 different offsets and waits for all of them (32 items)
//   socket_sync  shmkit SocketTransport, one read at a time (1 item per iteration)
// Goal: uring >= 3 x socket_sync.
//
// Also the `uring` variant of family transport_read_1MiB (registered here, beside the transport
// engineer's file, as "transport_read_1MiB/uring"): one iteration = one 1 MiB read through
// UringTransport (read_async + wait, split into 512 KiB wire requests in flight at once) into a
// destination in the transport's arena, so each reply's payload is received in place (one
// MSG_WAITALL recv after its header) with no extra copy; bytes/s. Goal: >=
// transport_read_1MiB/socket.
//
// Every variant forks a partner process that owns a 1 MiB memfd mapped MAP_SHARED (filled with a
// pattern) and serves it with an Agent (zero-copy on, 4 MiB socket buffers, as in
// transport_read_1MiB); the partner exits when the reader closes its socket and is reaped.
// Results are checked against the pattern before timing.
#include <benchmark/benchmark.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <vector>

#include "shmkit/sys/stream_io.hpp"
#include "shmkit/sys/syscall.hpp"
#include "shmkit/sys/uring.hpp"
#include "shmkit/transport/agent.hpp"
#include "shmkit/transport/socket_transport.hpp"
#include "shmkit/transport/uring_transport.hpp"

namespace {

using namespace shmkit;
using namespace shmkit::transport;

constexpr std::size_t kWindow = std::size_t{1} << 20;
constexpr int kSocketBuffer = 4 << 20;
constexpr int kDepth = 32;
constexpr std::size_t kSmall = 64;

std::uint8_t pattern_at(std::size_t i) { return static_cast<std::uint8_t>((i * 2654435761u) >> 13); }

void set_buffers(int fd) {
  if (sys::setsockopt_int(fd, SOL_SOCKET, SO_SNDBUFFORCE, kSocketBuffer) != 0)
    (void)sys::setsockopt_int(fd, SOL_SOCKET, SO_SNDBUF, kSocketBuffer);
  if (sys::setsockopt_int(fd, SOL_SOCKET, SO_RCVBUFFORCE, kSocketBuffer) != 0)
    (void)sys::setsockopt_int(fd, SOL_SOCKET, SO_RCVBUF, kSocketBuffer);
}

// The partner: a forked process serving a 1 MiB memfd window with an Agent until the reader
// closes its end; reaped (bounded, then SIGKILLed) by the destructor.
class AgentPartner {
 public:
  AgentPartner() {
    int sv[2];
    sys::check(sys::socketpair(AF_UNIX, SOCK_STREAM, 0, sv), "socketpair");
    std::fflush(nullptr);
    pid_ = ::fork();
    if (pid_ < 0) std::abort();
    if (pid_ == 0) {
      (void)sys::close(sv[0]);
      int code = 0;
      try {
        int fd = static_cast<int>(sys::check(sys::memfd_create("bench-uring", MFD_CLOEXEC), "memfd"));
        sys::check(sys::ftruncate(fd, kWindow), "ftruncate");
        void* p = nullptr;
        sys::check(sys::mmap(&p, nullptr, kWindow, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0), "mmap");
        auto* m = static_cast<std::uint8_t*>(p);
        for (std::size_t i = 0; i < kWindow; ++i) m[i] = pattern_at(i);
        AgentOptions o;
        o.socket_buffer = kSocketBuffer;
        Agent agent(o);
        agent.export_window({m, kWindow, false, fd, 0});
        agent.add_client(sv[1]);
        agent.run(/*until_no_clients=*/true);
      } catch (...) {
        code = 99;
      }
      ::_exit(code);
    }
    (void)sys::close(sv[1]);
    sock_ = sv[0];
    set_buffers(sock_);
  }
  ~AgentPartner() {
    if (sock_ >= 0) (void)sys::close(sock_);
    int st = 0;
    for (int i = 0; i < 2000 && ::waitpid(pid_, &st, WNOHANG) == 0; ++i) ::usleep(1000);
    if (::waitpid(pid_, &st, WNOHANG) == 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, &st, 0);
    }
  }
  AgentPartner(const AgentPartner&) = delete;
  AgentPartner& operator=(const AgentPartner&) = delete;
  // The reader's socket; the transport takes ownership.
  int take_sock() {
    int s = sock_;
    sock_ = -1;
    return s;
  }

 private:
  pid_t pid_ = -1;
  int sock_ = -1;
};

bool check(const std::uint8_t* p, std::size_t off, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i)
    if (p[i] != pattern_at(off + i)) return false;
  return true;
}

// Offsets of the 32 reads of one batch: spread over the window, distinct cache lines.
std::size_t offset_of(int i, std::uint64_t batch) {
  return ((static_cast<std::size_t>(i) * 4099 + batch * 64) * 64) % (kWindow - kSmall);
}

void BM_qd32_uring(benchmark::State& state) {
  if (int r = sys::uring_probe(); r < 0) return state.SkipWithError(sys::uring_unavailable_reason(r).c_str());
  AgentPartner partner;
  UringTransport t(partner.take_sock());
  const std::uint64_t remote = t.windows().at(0).address;
  std::vector<std::uint8_t> dst(kDepth * kSmall);
  std::array<UringRequest, kDepth> reqs;
  std::uint64_t batch = 0;
  auto one_batch = [&]() -> bool {
    for (int i = 0; i < kDepth; ++i) {
      if (t.read_async(remote + offset_of(i, batch), &dst[i * kSmall], kSmall, reqs[i]) != 0) return false;
    }
    for (auto& r : reqs) {
      if (t.wait(r, 5000) != 0) return false;
    }
    return true;
  };
  if (!one_batch()) return state.SkipWithError("first batch failed");
  for (int i = 0; i < kDepth; ++i) {
    if (!check(&dst[i * kSmall], offset_of(i, batch), kSmall)) return state.SkipWithError("wrong bytes");
  }
  for (auto _ : state) {
    ++batch;
    if (!one_batch()) return state.SkipWithError("read failed");
    benchmark::DoNotOptimize(dst.data());
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()) * kDepth);
  auto st = t.stats();
  state.counters["reads_per_send"] = static_cast<double>(st.requests) / static_cast<double>(st.sends);
}

void BM_qd32_socket_sync(benchmark::State& state) {
  AgentPartner partner;
  SocketTransport t(partner.take_sock());
  const std::uint64_t remote = t.windows().at(0).address;
  std::uint8_t dst[kSmall];
  if (t.read(remote + offset_of(3, 0), dst, kSmall) != 0 || !check(dst, offset_of(3, 0), kSmall))
    return state.SkipWithError("first read failed or wrong bytes");
  std::uint64_t n = 0;
  for (auto _ : state) {
    if (t.read(remote + offset_of(static_cast<int>(n % kDepth), n / kDepth), dst, kSmall) != 0)
      return state.SkipWithError("read failed");
    ++n;
    benchmark::DoNotOptimize(dst);
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
}

void BM_1MiB_uring(benchmark::State& state) {
  if (int r = sys::uring_probe(); r < 0) return state.SkipWithError(sys::uring_unavailable_reason(r).c_str());
  AgentPartner partner;
  UringTransportOptions o;
  // Bytes per wire request (default 512 KiB: a 1 MiB read is 2 requests in flight); settable
  // for tuning experiments.
  if (const char* e = std::getenv("SHMKIT_BENCH_URING_CHUNK")) o.chunk = std::strtoul(e, nullptr, 10);
  UringTransport t(partner.take_sock(), o);
  const std::uint64_t remote = t.windows().at(0).address;
  SpanArena::Span dst = t.allocate(kWindow);  // registered, non-moving: received in place
  if (!dst) return state.SkipWithError("arena too small");
  auto one = [&] {
    UringRequest r;
    return t.read_async(remote, dst.data, kWindow, r) == 0 && t.wait(r, 5000) == 0;
  };
  if (!one() || !check(reinterpret_cast<std::uint8_t*>(dst.data), 0, kWindow))
    return state.SkipWithError("first read failed or wrong bytes");
  for (auto _ : state) {
    if (!one()) return state.SkipWithError("read failed");
    benchmark::DoNotOptimize(dst.data);
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) * static_cast<std::int64_t>(kWindow));
  auto st = t.stats();
  state.counters["in_place"] = static_cast<double>(st.direct_bytes) /
                               static_cast<double>(st.direct_bytes + st.copied_bytes);
  t.release(dst);
}

}  // namespace

BENCHMARK(BM_qd32_uring)->Name("transport_read_64B_qd32/uring")->UseRealTime()->MinTime(1.0);
BENCHMARK(BM_qd32_socket_sync)->Name("transport_read_64B_qd32/socket_sync")->UseRealTime()->MinTime(1.0);
BENCHMARK(BM_1MiB_uring)->Name("transport_read_1MiB/uring")->UseRealTime()->MinTime(1.0);
