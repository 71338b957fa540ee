// Family transport_read_1MiB (BENCHMARKS.md): read 1 MiB of another process's memory into local
// memory; one iteration = one 1 MiB read; bytes/s.
//
// Every variant forks a partner process that owns a 1 MiB memfd mapped MAP_SHARED (filled with a
// pattern) and serves it:
//   socket                shmkit SocketTransport; the partner's Agent splices memfd -> pipe ->
//                         socket (zero-copy), the reader receives straight into its buffer
//   socket_copy           the same with AgentOptions::zero_copy = false (plain send from memory)
//   vm                    shmkit VmTransport (process_vm_readv, window-checked)
//   raw_socketpair        no protocol: the reader sends 1 byte, the partner write()s 1 MiB from
//                         its memory, the reader recv(MSG_WAITALL)s it. Default socket buffers.
//   raw_process_vm_readv  no protocol: one process_vm_readv of 1 MiB
//   raw_splice            no protocol: on a 1-byte request the partner splices 1 MiB memfd ->
//                         pipe -> socket (same pipe and socket buffer sizes as the Agent); the
//                         physical limit of the socket path
// The partner exits when the reader closes its socket, and is reaped (SIGKILLed after 2 s if not).
// The first read of each variant is checked against the pattern before timing. Each variant also
// runs as `.../loaded` (cpu_load.hpp: one CPU-bound process per CPU beside it) and reports
// cpu_ns_per_op: CPU time of the reader and its partner per 1 MiB read.
#include <benchmark/benchmark.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "cpu_load.hpp"
#include "partner_process.hpp"
#include "shmkit/sys/stream_io.hpp"
#include "shmkit/sys/syscall.hpp"
#include "shmkit/transport/agent.hpp"
#include "shmkit/transport/connect_memory.hpp"
#include "shmkit/transport/frame_io.hpp"
#include "shmkit/transport/splice_pipe.hpp"

namespace {

using namespace shmkit;
using namespace shmkit::transport;

constexpr std::size_t kSize = std::size_t{1} << 20;
constexpr int kSocketBuffer = 4 << 20;

std::uint8_t pattern_at(std::size_t i) { return static_cast<std::uint8_t>((i * 2654435761u) >> 13); }

struct Memory {
  int fd = -1;
  std::uint8_t* p = nullptr;
};

Memory make_memory() {
  Memory m;
  m.fd = static_cast<int>(sys::check(sys::memfd_create("bench-transport", MFD_CLOEXEC), "memfd"));
  sys::check(sys::ftruncate(m.fd, kSize), "ftruncate");
  void* p = nullptr;
  sys::check(sys::mmap(&p, nullptr, kSize, PROT_READ | PROT_WRITE, MAP_SHARED, m.fd, 0), "mmap");
  m.p = static_cast<std::uint8_t*>(p);
  for (std::size_t i = 0; i < kSize; ++i) m.p[i] = pattern_at(i);
  return m;
}

bool check_pattern(const std::vector<std::uint8_t>& buf) {
  for (std::size_t i = 0; i < kSize; ++i)
    if (buf[i] != pattern_at(i)) return false;
  return true;
}

void set_buffers(int fd) {
  if (sys::setsockopt_int(fd, SOL_SOCKET, SO_SNDBUFFORCE, kSocketBuffer) != 0)
    (void)sys::setsockopt_int(fd, SOL_SOCKET, SO_SNDBUF, kSocketBuffer);
  if (sys::setsockopt_int(fd, SOL_SOCKET, SO_RCVBUFFORCE, kSocketBuffer) != 0)
    (void)sys::setsockopt_int(fd, SOL_SOCKET, SO_RCVBUF, kSocketBuffer);
}

// The partner process: fork()ed, runs `body(socket)` and exits when the reader closes its end;
// finish() (or the destructor) reaps it, SIGKILLing it after 2 s.
struct Partner {
  pid_t pid = -1;
  int sock = -1;  // the reader's end
  template <class Body>
  explicit Partner(Body body) {
    int sv[2];
    sys::check(sys::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), "socketpair");
    pid = bench::fork_partner([&] {
      (void)sys::close(sv[0]);
      return body(sv[1]);
    });
    (void)sys::close(sv[1]);
    if (pid < 0) {
      (void)sys::close(sv[0]);
      sys::check(pid, "fork of the partner");
    }
    sock = sv[0];
  }
  ~Partner() { finish(); }
  void finish() {
    if (sock >= 0) (void)sys::close(sock);
    sock = -1;
    if (pid > 0) (void)bench::reap_within(pid, std::chrono::seconds(2));
    pid = -1;
  }
  int release_sock() {
    int s = sock;
    sock = -1;
    return s;
  }
};

void set_bytes(benchmark::State& state) {
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) * static_cast<std::int64_t>(kSize));
}

void agent_variant(benchmark::State& state, bool zero_copy, TransportChoice choice) {
  Partner partner([zero_copy](int s) {
    Memory m = make_memory();
    AgentOptions o;
    o.zero_copy = zero_copy;
    o.socket_buffer = kSocketBuffer;
    Agent agent(o);
    agent.export_window({m.p, kSize, false, m.fd, 0});
    agent.add_client(s);
    agent.run(/*until_no_clients=*/true);
    return 0;
  });
  ConnectOptions co;
  co.choice = choice;
  Connection c = connect_memory(partner.release_sock(), co);
  if (c.transport->windows().size() != 1) return state.SkipWithError("no window");
  const std::uint64_t remote = c.transport->windows()[0].address;
  std::vector<std::uint8_t> buf(kSize);
  if (c.transport->read(remote, buf.data(), kSize) != 0 || !check_pattern(buf))
    return state.SkipWithError("first read failed or returned wrong bytes");
  for (auto _ : state) {
    if (c.transport->read(remote, buf.data(), kSize) != 0) return state.SkipWithError("read failed");
    benchmark::DoNotOptimize(buf.data());
  }
  state.SetLabel(c.reason);
  c.transport.reset();  // closes the socket: the partner's agent sees its last client go
  partner.finish();
  set_bytes(state);
}

void BM_socket(benchmark::State& state) { agent_variant(state, true, TransportChoice::socket_only); }
void BM_socket_copy(benchmark::State& state) { agent_variant(state, false, TransportChoice::socket_only); }
void BM_vm(benchmark::State& state) { agent_variant(state, true, TransportChoice::vm_only); }

void BM_raw_socketpair(benchmark::State& state) {
  Partner partner([](int s) {
    Memory m = make_memory();
    char req;
    while (sys::read(s, &req, 1) == 1) {
      std::size_t done = 0;
      while (done < kSize) {
        ssize_t n = sys::write(s, m.p + done, kSize - done);
        if (n <= 0) return 1;
        done += static_cast<std::size_t>(n);
      }
    }
    return 0;
  });
  std::vector<std::uint8_t> buf(kSize);
  auto one = [&] {
    char req = 'r';
    if (sys::write(partner.sock, &req, 1) != 1) return false;
    return sys::recv(partner.sock, buf.data(), kSize, MSG_WAITALL) == static_cast<ssize_t>(kSize);
  };
  if (!one() || !check_pattern(buf)) return state.SkipWithError("first read failed");
  for (auto _ : state) {
    if (!one()) return state.SkipWithError("read failed");
    benchmark::DoNotOptimize(buf.data());
  }
  partner.finish();
  set_bytes(state);
}

void BM_raw_process_vm_readv(benchmark::State& state) {
  Partner partner([](int s) {
    Memory m = make_memory();
    auto addr = reinterpret_cast<std::uintptr_t>(m.p);
    if (sys::write(s, &addr, sizeof addr) != sizeof addr) return 1;
    char b;
    while (sys::read(s, &b, 1) > 0) {
    }
    return 0;
  });
  std::uintptr_t addr = 0;
  const auto deadline = transport::Deadline::after(std::chrono::seconds(10));
  if (recv_exact(partner.sock, &addr, sizeof addr, deadline) != 0)
    return state.SkipWithError("no address");
  std::vector<std::uint8_t> buf(kSize);
  iovec local{buf.data(), kSize};
  iovec remote{reinterpret_cast<void*>(addr), kSize};
  if (sys::process_vm_readv(partner.pid, &local, 1, &remote, 1) != static_cast<ssize_t>(kSize) ||
      !check_pattern(buf))
    return state.SkipWithError("process_vm_readv failed");
  for (auto _ : state) {
    if (sys::process_vm_readv(partner.pid, &local, 1, &remote, 1) != static_cast<ssize_t>(kSize))
      return state.SkipWithError("process_vm_readv failed");
    benchmark::DoNotOptimize(buf.data());
  }
  partner.finish();
  set_bytes(state);
}

void BM_raw_splice(benchmark::State& state) {
  Partner partner([](int s) {
    Memory m = make_memory();
    set_buffers(s);
    // The agent's data path without the protocol: a non-blocking socket, one pipe, SplicePipe's
    // order of waits.
    if (sys::set_nonblocking(s, true) != 0) return 1;
    SplicePipe pipe(AgentOptions{}.pipe_capacity);
    char req;
    for (;;) {
      if (sys::poll_one(s, POLLIN, -1) < 0) return 1;
      ssize_t got = sys::read(s, &req, 1);
      if (got == -EAGAIN) continue;
      if (got != 1) break;
      loff_t off = 0;
      if (pipe.move(m.fd, &off, s, nullptr, kSize, transport::Deadline::after(std::chrono::seconds(10))) !=
          static_cast<ssize_t>(kSize))
        return 1;
    }
    return 0;
  });
  std::vector<std::uint8_t> buf(kSize);
  auto one = [&] {
    char req = 'r';
    if (sys::write(partner.sock, &req, 1) != 1) return false;
    return sys::recv(partner.sock, buf.data(), kSize, MSG_WAITALL) == static_cast<ssize_t>(kSize);
  };
  if (!one() || !check_pattern(buf)) return state.SkipWithError("first read failed");
  for (auto _ : state) {
    if (!one()) return state.SkipWithError("read failed");
    benchmark::DoNotOptimize(buf.data());
  }
  partner.finish();
  set_bytes(state);
}

}  // namespace

constexpr auto kOneSecond = [](benchmark::internal::Benchmark* b) { b->MinTime(1.0); };
SHMKIT_TWO_PROCESS_BENCHMARK_WITH(BM_socket, "transport_read_1MiB/socket", kOneSecond);
SHMKIT_TWO_PROCESS_BENCHMARK_WITH(BM_socket_copy, "transport_read_1MiB/socket_copy", kOneSecond);
SHMKIT_TWO_PROCESS_BENCHMARK_WITH(BM_vm, "transport_read_1MiB/vm", kOneSecond);
SHMKIT_TWO_PROCESS_BENCHMARK_WITH(BM_raw_socketpair, "transport_read_1MiB/raw_socketpair", kOneSecond);
SHMKIT_TWO_PROCESS_BENCHMARK_WITH(BM_raw_process_vm_readv, "transport_read_1MiB/raw_process_vm_readv", kOneSecond);
SHMKIT_TWO_PROCESS_BENCHMARK_WITH(BM_raw_splice, "transport_read_1MiB/raw_splice", kOneSecond);
