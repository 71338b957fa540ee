#include "shmkit/transport/socket_transport.hpp"

#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <string>

#include "shmkit/sys/error.hpp"
#include "shmkit/sys/stream_io.hpp"
#include "shmkit/sys/syscall.hpp"
#include "shmkit/transport/frame_io.hpp"
#include "agent_handshake.hpp"

namespace shmkit::transport {

namespace mp = memproto;

namespace {
// Error frames are small: header + ErrorFixed + u32 + at most kMaxErrorDetail bytes.
constexpr std::size_t kErrorFrameMax =
    wire::kHeaderSize + sizeof(wire::ErrorFixed) + 4 + wire::kMaxErrorDetail;

}  // namespace

SocketTransport::SocketTransport(int fd, const SocketTransportOptions& opts) : fd_(fd), opts_(opts) {
  try {
    if (opts_.max_message < wire::kMinMaxMessage || opts_.max_message > wire::kAbsoluteMaxMessage)
      throw Error(Errc::invalid_argument, "SocketTransport: max_message out of range");
    if (sys::is_stream_socket(fd) != 1)
      throw Error(Errc::invalid_argument,
                  "SocketTransport: fd " + std::to_string(fd) + " is not a connected stream socket");
    const int ms = static_cast<int>(std::max<long long>(1, opts_.io_timeout.count()));
    // Kernel-side bounds on blocking calls, so a blocking socket never waits past io_timeout
    // either (frame_io also polls with a deadline).
    (void)sys::set_socket_timeout(fd, SO_RCVTIMEO, ms);
    (void)sys::set_socket_timeout(fd, SO_SNDTIMEO, ms);
    if (opts_.pipeline_depth < 1) opts_.pipeline_depth = 1;

    detail::AgentSession session = detail::handshake_with_agent(
        fd, "SocketTransport", opts_.max_message, {"memory-client"}, Deadline::after(opts_.io_timeout));
    peer_ = std::move(session.hello);
    max_message_ = session.max_message;
    max_data_ = mp::max_data(max_message_);
    windows_ = std::move(session.windows);
  } catch (...) {
    if (opts_.own_fd) (void)sys::close(fd);
    throw;
  }
}

SocketTransport::~SocketTransport() {
  if (opts_.own_fd && fd_ >= 0) (void)sys::close(fd_);
}

int SocketTransport::fail(int err) noexcept {
  broken_ = true;
  // A reset connection is a gone peer, like EOF: one code for callers to test.
  return err == -ECONNRESET ? -EPIPE : err;
}

int SocketTransport::expect_reply(wire::Tag tag, wire::Header& h) noexcept {
  if (int r = recv_exact_spin(fd_, &h, sizeof h, Deadline::after(opts_.io_timeout), opts_.spin); r < 0)
    return fail(r);
  if (wire::check_header(h, max_message_) != wire::Status::ok || h.tag != tag) return fail(-EPROTO);
  return 0;
}

int SocketTransport::read_error(const wire::Header& h) noexcept {
  std::array<std::byte, kErrorFrameMax> buf{};
  std::uint32_t n = wire::payload_size(h);
  if (n > buf.size() - wire::kHeaderSize) return fail(-EPROTO);
  if (int r = recv_exact(fd_, buf.data(), n, Deadline::after(opts_.io_timeout)); r < 0) return fail(r);
  wire::ErrorView e;
  if (wire::decode_error(std::span<const std::byte>(buf.data(), n), e) != wire::Status::ok)
    return fail(-EPROTO);
  return -e.code;
}

int SocketTransport::refresh_windows() noexcept {
  if (broken_) return -EPIPE;
  wire::Header req{wire::kHeaderSize, mp::ids::windows, 0, next_tag_++};
  if (int r = send_all(fd_, &req, sizeof req, Deadline::after(opts_.io_timeout)); r < 0) return fail(r);
  wire::Header h;
  if (int r = expect_reply(req.tag, h); r < 0) return r;
  if (h.id == wire::ids::error) return read_error(h);
  if (h.id != mp::ids::windows) return fail(-EPROTO);
  std::vector<std::byte> buf;
  try {
    buf.resize(wire::payload_size(h));  // <= max_message_, checked by expect_reply
  } catch (...) {
    return fail(-ENOMEM);
  }
  if (int r = recv_exact(fd_, buf.data(), buf.size(), Deadline::after(opts_.io_timeout)); r < 0)
    return fail(r);
  std::vector<WindowDesc> out;
  if (int r = detail::decode_windows(buf, out); r < 0) return r == -ENOMEM ? r : fail(r);
  windows_ = std::move(out);
  return 0;
}

int SocketTransport::read(std::uint64_t remote, void* local, std::size_t len) noexcept {
  if (broken_) return -EPIPE;
  if (len == 0) return 0;
  if (remote + len < remote) return -EFAULT;
  auto* dst = static_cast<std::byte*>(local);
  int first_error = 0;
  std::size_t off = 0;
  // Pipelining: send up to pipeline_depth requests, then read their replies in order.
  struct Sent {
    wire::Tag tag;
    std::uint64_t offset, length;
  };
  std::array<Sent, 64> sent{};
  std::array<std::byte, 64 * mp::kReadRequestFrame> reqbuf{};
  const std::size_t depth = std::min<std::size_t>(static_cast<std::size_t>(opts_.pipeline_depth), sent.size());
  while (off < len) {
    std::size_t k = 0;
    wire::Writer w(reqbuf);
    for (; k < depth && off < len; ++k) {
      std::uint64_t chunk = std::min<std::uint64_t>(len - off, max_data_);
      wire::Tag tag = next_tag_++;
      // Each request is its own frame; the Writer just lays them end to end.
      w.u32(mp::kReadRequestFrame);
      w.u16(mp::ids::read);
      w.u16(0);
      w.u64(tag);
      w.pod(mp::ReadRequest{remote + off, chunk});
      sent[k] = {tag, off, chunk};
      off += chunk;
    }
    if (!w.ok()) return -EINVAL;  // cannot happen: reqbuf holds 64 requests
    if (int r = send_all(fd_, w.written().data(), w.size(), Deadline::after(opts_.io_timeout)); r < 0)
      return fail(r);
    for (std::size_t i = 0; i < k; ++i) {
      wire::Header h;
      if (int r = expect_reply(sent[i].tag, h); r < 0) return r;
      if (h.id == wire::ids::error) {
        int e = read_error(h);
        if (broken_) return e;
        if (first_error == 0) first_error = e;
        continue;
      }
      if (h.id != mp::ids::read || wire::payload_size(h) != sent[i].length) return fail(-EPROTO);
      if (int r = recv_exact_spin(fd_, dst + sent[i].offset, sent[i].length,
                                  Deadline::after(opts_.io_timeout), opts_.spin);
          r < 0)
        return fail(r);
    }
    if (first_error != 0) return first_error;
  }
  return first_error;
}

int SocketTransport::write(std::uint64_t remote, const void* local, std::size_t len) noexcept {
  if (broken_) return -EPIPE;
  if (len == 0) return 0;
  if (remote + len < remote) return -EFAULT;
  const auto* src = static_cast<const std::byte*>(local);
  int first_error = 0;
  std::size_t off = 0;
  struct Sent {
    wire::Tag tag;
  };
  std::array<Sent, 64> sent{};
  const std::size_t depth = std::min<std::size_t>(static_cast<std::size_t>(opts_.pipeline_depth), sent.size());
  while (off < len) {
    std::size_t k = 0;
    for (; k < depth && off < len; ++k) {
      std::uint64_t chunk = std::min<std::uint64_t>(len - off, max_data_);
      struct {
        wire::Header h;
        mp::WriteRequest req;
      } prefix{{static_cast<std::uint32_t>(mp::kWriteRequestPrefix + chunk), mp::ids::write, 0, next_tag_++},
               {remote + off, chunk}};
      static_assert(sizeof prefix == mp::kWriteRequestPrefix);
      iovec iov[2] = {{&prefix, sizeof prefix}, {const_cast<std::byte*>(src + off), chunk}};
      if (int r = send_all(fd_, iov, 2, Deadline::after(opts_.io_timeout)); r < 0) return fail(r);
      sent[k] = {prefix.h.tag};
      off += chunk;
    }
    for (std::size_t i = 0; i < k; ++i) {
      wire::Header h;
      if (int r = expect_reply(sent[i].tag, h); r < 0) return r;
      if (h.id == wire::ids::error) {
        int e = read_error(h);
        if (broken_) return e;
        if (first_error == 0) first_error = e;
        continue;
      }
      if (h.id != mp::ids::write || wire::payload_size(h) != 0) return fail(-EPROTO);
    }
    if (first_error != 0) return first_error;
  }
  return first_error;
}

}  // namespace shmkit::transport
