// Test support for the memory transport tests: an agent process (forked, or exec'd as a test
// helper) that exports three windows with known contents, and takes new client sockets over a
// control socket so a test can connect as many clients as it likes.
//
// Windows, in the order the agent exports (and announces) them:
//   0  kRwSize bytes, read-write, backed by a file (zero-copy unless the config says otherwise):
//      by default a range of a shmkit::Segment (create_anonymous) starting kSegmentWindowOffset
//      bytes into it, served from the segment's fd at that file offset
//   1  kRoSize bytes, read-only, anonymous memory (no fd: always copies)
//   2  kAnonSize bytes, read-write, anonymous memory (no fd)
// Byte i of window w starts as pattern(w, i).
//
// Control socket protocol (test -> agent): a message carrying a descriptor (sys::send_fd) adds it
// as a client; a command is three plain bytes {any, command, window}:
//   'S'  the agent's AgentStats, sent back as raw bytes;
//   'U'  unexport_window(window), then fill it with kCanary; replies one byte once both are done;
//   'C'  replies 1 when every byte of the window is still kCanary, else 0;
// EOF stops the agent and the process exits 0.
#pragma once

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "shmkit/shm/segment.hpp"
#include "shmkit/sys/error.hpp"
#include "shmkit/sys/stream_io.hpp"
#include "shmkit/sys/syscall.hpp"
#include "shmkit/transport/agent.hpp"
#include "shmkit/transport/frame_io.hpp"
#include "test_syscalls.hpp"
#include "testing.hpp"

namespace shmkit::transport::testing {

inline constexpr std::size_t kRwSize = std::size_t{24} << 20;
inline constexpr std::size_t kRoSize = std::size_t{1} << 20;
inline constexpr std::size_t kAnonSize = std::size_t{2} << 20;
// Window 0 of the "segment" backing starts here in the segment (past its header), so the agent's
// file offsets are not the window's offsets.
inline constexpr std::size_t kSegmentWindowOffset = std::size_t{64} << 10;

inline constexpr std::uint8_t kCanary = 0xC5;

inline std::uint8_t pattern(unsigned window, std::uint64_t i) {
  std::uint64_t x = (i + 1) * 0x9E3779B97F4A7C15ull + window * 0x632BE59BD9B4E019ull;
  return static_cast<std::uint8_t>((x >> 29) ^ (x >> 47));
}
inline void fill_pattern(std::uint8_t* p, unsigned window, std::uint64_t from, std::size_t n) {
  for (std::size_t k = 0; k < n; ++k) p[k] = pattern(window, from + k);
}

struct AgentConfig {
  bool zero_copy = true;
  bool dumpable = true;
  // segment | memfd | secret (memfd_secret: cannot splice) | append (memfd, served via an O_APPEND fd)
  std::string backing = "segment";
  int io_timeout_ms = 5000;
  int socket_buffer = 4 << 20;  // AgentOptions::socket_buffer (small: forces partial transfers)

  std::string encode() const {
    return std::string(zero_copy ? "1" : "0") + "," + (dumpable ? "1" : "0") + "," + backing + "," +
           std::to_string(io_timeout_ms) + "," + std::to_string(socket_buffer);
  }
  static AgentConfig decode(const std::string& s) {
    AgentConfig c;
    std::vector<std::string> parts;
    std::size_t start = 0;
    for (std::size_t i = 0; i <= s.size(); ++i)
      if (i == s.size() || s[i] == ',') {
        parts.push_back(s.substr(start, i - start));
        start = i + 1;
      }
    if (parts.size() != 5) throw std::runtime_error("bad agent config " + s);
    c.zero_copy = parts[0] == "1";
    c.dumpable = parts[1] == "1";
    c.backing = parts[2];
    c.io_timeout_ms = std::stoi(parts[3]);
    c.socket_buffer = std::stoi(parts[4]);
    return c;
  }
};

inline void* map_or_throw(std::size_t len, int fd) {
  void* p = nullptr;
  int flags = fd >= 0 ? MAP_SHARED : (MAP_PRIVATE | MAP_ANONYMOUS);
  sys::check(sys::mmap(&p, nullptr, len, PROT_READ | PROT_WRITE, flags, fd, 0), "test agent: mmap");
  return p;
}

// The agent process body. Returns the exit code.
inline int run_test_agent(int control_fd, const AgentConfig& cfg) {
  if (!cfg.dumpable) sys::check(::shmkit::testing::set_dumpable(false), "prctl(PR_SET_DUMPABLE, 0)");
  std::optional<Segment> seg;
  int mem_fd = -1;
  std::uint8_t* rw = nullptr;
  std::uint64_t file_offset = 0;
  if (cfg.backing == "segment") {
    seg.emplace(Segment::create_anonymous(kSegmentWindowOffset + kRwSize));
    rw = reinterpret_cast<std::uint8_t*>(seg->base()) + kSegmentWindowOffset;
    mem_fd = seg->fd();
    file_offset = kSegmentWindowOffset;
  } else {
    mem_fd = cfg.backing == "secret" ? ::shmkit::testing::memfd_secret(0) : sys::memfd_create("shmkit-test-rw", MFD_CLOEXEC);
    sys::check(mem_fd, "test agent: memfd");
    sys::check(sys::ftruncate(mem_fd, static_cast<off_t>(kRwSize)), "test agent: ftruncate");
    rw = static_cast<std::uint8_t*>(map_or_throw(kRwSize, mem_fd));
  }
  auto* ro = static_cast<std::uint8_t*>(map_or_throw(kRoSize, -1));
  auto* anon = static_cast<std::uint8_t*>(map_or_throw(kAnonSize, -1));
  fill_pattern(rw, 0, 0, kRwSize);
  fill_pattern(ro, 1, 0, kRoSize);
  fill_pattern(anon, 2, 0, kAnonSize);
  int serve_fd = mem_fd;
  if (cfg.backing == "append") {
    std::string path = "/proc/self/fd/" + std::to_string(mem_fd);
    serve_fd = static_cast<int>(sys::check(sys::open(path.c_str(), O_RDWR | O_APPEND), "reopen O_APPEND"));
  }
  AgentOptions opts;
  opts.zero_copy = cfg.zero_copy;
  opts.io_timeout = std::chrono::milliseconds(cfg.io_timeout_ms);
  opts.socket_buffer = cfg.socket_buffer;
  Agent agent(opts);
  agent.export_window({rw, kRwSize, true, serve_fd, file_offset});
  agent.export_window({ro, kRoSize, false, -1, 0});
  agent.export_window({anon, kAnonSize, true, -1, 0});
  agent.start();
  std::uint8_t* const window_base[3] = {rw, ro, anon};
  const std::size_t window_size[3] = {kRwSize, kRoSize, kAnonSize};
  const auto reply = [&](const void* p, std::size_t n) {
    return send_all(control_fd, p, n, Deadline::after(std::chrono::seconds(5))) == 0;
  };
  for (;;) {
    int fd = sys::recv_fd(control_fd);
    if (fd >= 0) {
      agent.add_client(fd);
    } else if (fd == -EPROTO) {
      std::uint8_t cmd[2];
      if (recv_exact(control_fd, cmd, sizeof cmd, Deadline::after(std::chrono::seconds(5))) < 0 || cmd[1] > 2) break;
      std::uint8_t* const base = window_base[cmd[1]];
      const std::size_t size = window_size[cmd[1]];
      if (cmd[0] == 'S') {
        AgentStats st = agent.stats();
        if (!reply(&st, sizeof st)) break;
      } else if (cmd[0] == 'U') {
        const std::uint8_t found = agent.unexport_window(base) ? 1 : 0;
        // The owner's right after unexport_window() returns: the memory is its own again.
        std::memset(base, kCanary, size);
        if (!reply(&found, 1)) break;
      } else if (cmd[0] == 'C') {
        std::uint8_t intact = 1;
        for (std::size_t i = 0; i < size; ++i) intact &= base[i] == kCanary ? 1 : 0;
        if (!reply(&intact, 1)) break;
      } else {
        break;
      }
    } else {
      break;  // EOF (-EPIPE) or error: the test is done with us
    }
  }
  agent.stop();
  return 0;
}

}  // namespace shmkit::transport::testing

// Exec'd form: args = {control fd number, config}.
SHMKIT_TEST_HELPER(memory_agent) {
  if (args.size() != 2) return 2;
  int control = std::stoi(args[0]);
  (void)shmkit::sys::set_cloexec(control, true);
  return shmkit::transport::testing::run_test_agent(control, shmkit::transport::testing::AgentConfig::decode(args[1]));
}

namespace shmkit::transport::testing {

// A running test agent (forked or exec'd) and its control socket.
class AgentProcess {
 public:
  AgentProcess(bool exec, const AgentConfig& cfg = {}) {
    int sv[2];
    sys::check(sys::socketpair(AF_UNIX, SOCK_STREAM, 0, sv), "socketpair");
    control_ = sv[0];
    if (exec) {
      // The child's end must survive exec: a non-close-on-exec duplicate, closed here afterwards.
      int inheritable = static_cast<int>(sys::check(sys::dup_fd(sv[1], false), "dup"));
      child_.emplace(shmkit::testing::spawn_helper("memory_agent", {std::to_string(inheritable), cfg.encode()}));
      (void)sys::close(inheritable);
    } else {
      child_.emplace([&] {
        (void)sys::close(sv[0]);
        return run_test_agent(sv[1], cfg);
      });
    }
    (void)sys::close(sv[1]);
  }
  ~AgentProcess() {
    if (control_ >= 0) (void)sys::close(control_);
    if (child_) child_->wait(std::chrono::seconds(5));
  }
  AgentProcess(const AgentProcess&) = delete;
  AgentProcess& operator=(const AgentProcess&) = delete;

  // A new connected client socket (the agent got the other end).
  int connect() {
    int sv[2];
    sys::check(sys::socketpair(AF_UNIX, SOCK_STREAM, 0, sv), "socketpair");
    int r = sys::send_fd(control_, sv[1]);
    (void)sys::close(sv[1]);
    if (r < 0) {
      (void)sys::close(sv[0]);
      sys::check(r, "send_fd to the test agent");
    }
    return sv[0];
  }
  AgentStats stats() {
    command('S', 0);
    AgentStats st{};
    sys::check(recv_exact(control_, &st, sizeof st, Deadline::after(std::chrono::seconds(5))), "agent stats");
    return st;
  }
  // The agent's unexport_window() of window `w` (then it fills the window with kCanary). True when
  // the agent had that window; returns after unexport_window() has returned in the agent.
  bool unexport(unsigned w) { return command_reply('U', w) == 1; }
  // True when window `w` still holds only kCanary bytes.
  bool canary_intact(unsigned w) { return command_reply('C', w) == 1; }
  // Stops the agent and returns its exit code.
  int finish() {
    (void)sys::close(control_);
    control_ = -1;
    return child_->wait(std::chrono::seconds(10));
  }
  shmkit::testing::Child& child() { return *child_; }
  pid_t pid() const { return child_->pid(); }

 private:
  void command(char c, unsigned w) {
    const std::uint8_t msg[3] = {0, static_cast<std::uint8_t>(c), static_cast<std::uint8_t>(w)};
    sys::check(send_all(control_, msg, sizeof msg, Deadline::after(std::chrono::seconds(5))), "test agent command");
  }
  std::uint8_t command_reply(char c, unsigned w) {
    command(c, w);
    std::uint8_t r = 0;
    sys::check(recv_exact(control_, &r, 1, Deadline::after(std::chrono::seconds(30))), "test agent reply");
    return r;
  }
  int control_ = -1;
  std::optional<shmkit::testing::Child> child_;
};

}  // namespace shmkit::transport::testing
