/// SocketTransport: a MemoryTransport over any connected stream socket (a unix socketpair, a unix
/// or TCP connection) whose other end an Agent serves. rsyscall's socket memory transport, with
/// partial reads and writes handled (they are the normal case on a stream), large transfers split
/// into requests of at most memproto::max_data(max_message) bytes, several requests in flight at
/// once (pipelined: replies come back in order on one connection), and every wait bounded by
/// io_timeout so that a peer that dies or stalls mid-transfer is an error, never a hang.
///
/// The constructor sets SO_RCVTIMEO and SO_SNDTIMEO on the socket to io_timeout (so even a
/// blocking socket never waits longer); the socket may be blocking or not.
///
/// Read data is received straight into the caller's buffer (no intermediate copy); write data is
/// sent straight from it. The agent side splices (see agent.hpp), so a read costs one copy in
/// the kernel (socket -> caller memory) instead of two.
#pragma once

#include <chrono>
#include <cstdint>
#include <vector>

#include "shmkit/transport/memory_transport.hpp"
#include "shmkit/transport/wire.hpp"

namespace shmkit::transport {

struct SocketTransportOptions {
  std::uint32_t max_message = wire::kDefaultMaxMessage;
  std::chrono::milliseconds io_timeout{5000};
  bool own_fd = true;            // close the socket in the destructor
  int pipeline_depth = 16;       // requests sent before the first reply is read
  /// Replies are received spinning (MSG_DONTWAIT, yielding the CPU between tries) for up to this
  /// long after the last byte came before the transport sleeps (frame_io.hpp recv_exact_spin): a
  /// reply on its way then costs no wake-up on an idle machine. Off by default: on a loaded
  /// 2-CPU machine the spin takes CPU time the agent needs (docs/PERFORMANCE_NOTES.md), and the
  /// agent's own spin (AgentOptions::spin) already removes its wake-up.
  std::chrono::microseconds spin{0};
};

class SocketTransport final : public MemoryTransport {
 public:
  /// Performs the handshake and fetches the window list. Throws shmkit::Error: peer_closed,
  /// timed_out, protocol (the peer is not a memory agent or sent garbage), unsupported.
  explicit SocketTransport(int fd, const SocketTransportOptions& opts = {});
  ~SocketTransport() override;

  [[nodiscard]] int read(std::uint64_t remote, void* local, std::size_t len) noexcept override;
  [[nodiscard]] int write(std::uint64_t remote, const void* local, std::size_t len) noexcept override;
  std::string_view kind() const noexcept override { return "socket"; }
  const std::vector<WindowDesc>& windows() const noexcept override { return windows_; }
  int remote_pid() const noexcept override { return peer_.pid; }

  /// Asks the agent for its windows again (after it exported more). 0 or -errno.
  [[nodiscard]] int refresh_windows() noexcept;
  const wire::Hello& peer_hello() const noexcept { return peer_; }
  std::uint32_t max_message() const noexcept { return max_message_; }
  int fd() const noexcept { return fd_; }
  /// True once a transfer failed mid-frame: the stream position is lost, every call is -EPIPE.
  bool broken() const noexcept { return broken_; }

 private:
  int fail(int err) noexcept;  // marks the stream broken, returns err
  /// Receives one reply header for `tag`; payload left in the socket. 0 or -errno (broken).
  int expect_reply(wire::Tag tag, wire::Header& h) noexcept;
  /// Reads an Error payload after its header; returns -code, or -errno when broken.
  int read_error(const wire::Header& h) noexcept;

  int fd_;
  SocketTransportOptions opts_;
  wire::Hello peer_;
  std::uint32_t max_message_ = 0;
  std::uint64_t max_data_ = 0;
  wire::Tag next_tag_ = 1;
  bool broken_ = false;
  std::vector<WindowDesc> windows_;
};

}  // namespace shmkit::transport
