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

namespace shmkit::transport {

namespace mp = memproto;

namespace {
// Error frames are small: header + ErrorFixed + u32 + at most kMaxErrorDetail bytes.
constexpr std::size_t kErrorFrameMax =
    wire::kHeaderSize + sizeof(wire::ErrorFixed) + 4 + wire::kMaxErrorDetail;

[[noreturn]] void throw_setup(int err, const std::string& what) {
  Errc code = err == ETIMEDOUT ? Errc::timed_out
              : (err == EPIPE || err == ECONNRESET) ? Errc::peer_closed
              : (err == EPROTO || err == EBADMSG || err == EMSGSIZE) ? Errc::protocol
                                                                     : errc_from_errno(err);
  throw Error(code, "SocketTransport: " + what + ": " + std::strerror(err), err);
}
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

    std::array<std::byte, wire::kMinMaxMessage> buf{};
    wire::Hello mine;
    mine.max_message = opts_.max_message;
    mine.pid = ::getpid();
    mine.features = {"memory-client"};
    std::uint32_t n = wire::encode_hello(buf, 0, mine);
    if (int r = send_all(fd, buf.data(), n, Deadline::after(opts_.io_timeout)); r < 0)
      throw_setup(-r, "sending Hello");
    // The agent's Hello may list many features: allow up to our own maximum (bounded).
    std::vector<std::byte> in(std::min<std::uint32_t>(opts_.max_message, 1u << 20));
    wire::Header h;
    long got = recv_frame(fd, h, in, opts_.max_message, Deadline::after(opts_.io_timeout));
    if (got < 0) throw_setup(static_cast<int>(-got), "receiving the agent's Hello");
    std::span<const std::byte> payload(in.data(), static_cast<std::size_t>(got));
    if (h.id == wire::ids::error) {
      wire::ErrorView e;
      if (wire::decode_error(payload, e) == wire::Status::ok)
        throw_setup(e.code, "the agent refused the Hello (" + std::string(e.detail) + ")");
      throw_setup(EPROTO, "malformed Error reply to Hello");
    }
    if (h.id != wire::ids::hello) throw_setup(EPROTO, "the peer's first frame is not a Hello");
    if (auto s = wire::decode_hello(payload, peer_); s != wire::Status::ok)
      throw_setup(wire::to_errno(s), "the agent's Hello is malformed");
    if (!peer_.has_feature("memory") || !peer_.serves(mp::ids::read) ||
        !peer_.serves(mp::ids::write) || !peer_.serves(mp::ids::windows))
      throw Error(Errc::unsupported, "SocketTransport: the peer is not a memory agent");
    max_message_ = wire::negotiate_max(opts_.max_message, peer_.max_message);
    max_data_ = mp::max_data(max_message_);
    if (int r = refresh_windows(); r < 0) throw_setup(-r, "fetching the window list");
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
  wire::Reader rd(buf);
  wire::SliceView<WindowDesc> ws;
  if (!rd.slice(ws) || rd.finish() != wire::Status::ok) return fail(-EPROTO);
  std::vector<WindowDesc> out;
  try {
    out = ws.to_vector();
  } catch (...) {
    return -ENOMEM;
  }
  for (const auto& w : out)
    if (w.address + w.length < w.address) return fail(-EPROTO);  // INVARIANT1 of WindowDesc
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
