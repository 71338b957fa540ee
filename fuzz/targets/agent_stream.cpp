// Fuzz entry point: a memory Agent (transport/include/shmkit/transport/agent.hpp) serving one
// small exported window to a client that sends hostile bytes over a socketpair. Shared by
// fuzz/fuzz_agent_stream.cpp (libFuzzer) and tests/fuzz/corpus_replay_test.cpp (GCC).
//
// The window: kWindowPages pages at the fixed address kWindowAddress (so seed inputs can name
// it), backed by a memfd (zero-copy serving uses splice from that fd), fenced by PROT_NONE guard
// pages on both sides: an access outside the window faults, whatever the sanitizer.
//
// Input: byte 0 = mode bits (bit 0: AgentOptions::zero_copy, bit 1: the window is writable,
// other bits: the window's fill pattern); the rest is what the client writes, starting with (or
// without) its Hello, after which the client half-closes and keeps reading replies.
//
// Properties (a violation aborts):
//   * no access outside the window (guard pages / ASan), no crash, no exception;
//   * a read-only window is unchanged;
//   * after the client's stream ended, the agent drops that client within a bounded time (it
//     never waits forever on a client that has nothing more to say);
//   * every byte the agent sends back parses as frames (lengths and flags valid).
#pragma once

#include <sys/mman.h>
#include <sys/socket.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "shmkit/sys/error.hpp"
#include "shmkit/sys/stream_io.hpp"
#include "shmkit/sys/syscall.hpp"
#include "shmkit/transport/agent.hpp"
#include "shmkit/transport/wire.hpp"

namespace shmkit::fuzz {

inline constexpr std::uintptr_t kWindowAddress = 0x3f0000000000;  // 63 TiB: free in every process
inline constexpr std::size_t kWindowPages = 4;

[[noreturn]] inline void agent_property_failed(const char* what) {
  std::fprintf(stderr, "fuzz_agent_stream: property violated: %s\n", what);
  std::abort();
}

struct FencedWindow {
  std::byte* guard_lo = nullptr;  // one PROT_NONE page, then the window, then one PROT_NONE page
  std::byte* window = nullptr;
  std::size_t length = 0;
  int fd = -1;

  FencedWindow() {
    const std::size_t page = sys::page_size();
    length = kWindowPages * page;
    fd = sys::memfd_create("shmkit-fuzz-window", MFD_CLOEXEC);
    if (fd < 0 || sys::ftruncate(fd, static_cast<off_t>(length)) != 0) std::abort();
    void* p = nullptr;
    // The guard reservation first (PROT_NONE, anonymous), then the window over its middle.
    if (sys::mmap(&p, reinterpret_cast<void*>(kWindowAddress - page), length + 2 * page, PROT_NONE,
                  MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE | MAP_NORESERVE, -1, 0) != 0)
      std::abort();
    guard_lo = static_cast<std::byte*>(p);
    if (sys::mmap(&p, reinterpret_cast<void*>(kWindowAddress), length, PROT_READ | PROT_WRITE,
                  MAP_SHARED | MAP_FIXED, fd, 0) != 0)
      std::abort();
    window = static_cast<std::byte*>(p);
  }
  void fill(std::uint8_t seed) noexcept {
    for (std::size_t i = 0; i < length; ++i) window[i] = static_cast<std::byte>((i * 131 + seed) & 0xff);
  }
  std::uint64_t checksum() const noexcept {
    std::uint64_t h = 1469598103934665603ULL;
    for (std::size_t i = 0; i < length; ++i) h = (h ^ static_cast<std::uint8_t>(window[i])) * 1099511628211ULL;
    return h;
  }
};

inline FencedWindow& fenced_window() {
  static FencedWindow w;  // mapped once per process, reused by every input
  return w;
}

// Checks that `bytes` is a sequence of well-formed frames (the last one may be cut short only if
// the agent was still sending when it dropped the client: not allowed here, see below).
inline void check_reply_stream(const std::vector<std::byte>& bytes) {
  std::size_t pos = 0;
  while (bytes.size() - pos >= transport::wire::kHeaderSize) {
    transport::wire::Header h;
    std::memcpy(&h, bytes.data() + pos, sizeof h);
    if (transport::wire::check_header(h, transport::wire::kAbsoluteMaxMessage) != transport::wire::Status::ok)
      agent_property_failed("the agent sent a malformed frame header");
    if (h.length > bytes.size() - pos) return;  // a reply cut by the agent's io_timeout: allowed
    pos += h.length;
  }
}

// Runs one client session; returns every byte the agent sent back (after checking the properties).
inline std::vector<std::byte> agent_session(const std::uint8_t* data, std::size_t n) {
  if (n == 0) return {};
  const std::uint8_t mode = data[0];
  ++data;
  --n;
  FencedWindow& win = fenced_window();
  win.fill(mode);
  const std::uint64_t before = win.checksum();
  const bool writable = (mode & 2) != 0;

  int sv[2];
  if (sys::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) return {};
  std::vector<std::byte> replies;
  {
    transport::AgentOptions o;
    o.zero_copy = (mode & 1) != 0;
    o.io_timeout = std::chrono::milliseconds(200);
    o.pipe_capacity = 64 * 1024;
    o.socket_buffer = 1 << 20;  // the whole input fits: the client never blocks on its send
    transport::Agent agent(o);
    agent.export_window({win.window, win.length, writable, win.fd, 0});
    agent.add_client(sv[0]);  // the agent owns sv[0] now
    int client = sv[1];
    // Client side non-blocking: we interleave sending, serving and draining in one thread.
    std::size_t sent = 0;
    bool ended = false;
    auto drain = [&] {
      std::byte buf[65536];
      for (;;) {
        ssize_t r = sys::recv(client, buf, sizeof buf, MSG_DONTWAIT);
        if (r <= 0) break;
        replies.insert(replies.end(), buf, buf + r);
      }
    };
    const auto start = std::chrono::steady_clock::now();
    auto ended_at = start;
    for (;;) {
      if (sent < n) {
        ssize_t w = sys::send(client, data + sent, n - sent, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (w > 0) sent += static_cast<std::size_t>(w);
        else if (w < 0 && w != -EAGAIN) sent = n;  // the agent closed its end
      }
      if (sent == n && !ended) {
        ended = true;
        ended_at = std::chrono::steady_clock::now();
        (void)sys::shutdown(client, SHUT_WR);
      }
      std::size_t left = agent.serve_once(5);
      drain();
      if (left == 0) break;
      auto now = std::chrono::steady_clock::now();
      if (ended && now - ended_at > std::chrono::seconds(3))
        agent_property_failed("the agent kept a client whose stream had ended for 3 s");
      if (now - start > std::chrono::seconds(20)) agent_property_failed("one input ran for 20 s");
    }
    drain();
    (void)sys::close(client);
    (void)agent.stats();
  }
  check_reply_stream(replies);
  if (!writable && win.checksum() != before) agent_property_failed("a read-only window was written");
  return replies;
}

inline int agent_stream_one(const std::uint8_t* data, std::size_t n) {
  (void)agent_session(data, n);
  return 0;
}

}  // namespace shmkit::fuzz
