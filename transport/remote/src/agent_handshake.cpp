#include "agent_handshake.hpp"

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "shmkit/sys/error.hpp"
#include "shmkit/sys/log.hpp"
#include "shmkit/sys/stream_io.hpp"
#include "shmkit/sys/syscall.hpp"
#include "shmkit/transport/frame_io.hpp"

namespace shmkit::transport::detail {

namespace mp = memproto;

namespace {

[[noreturn]] void fail(std::string_view who, int err, const std::string& what) {
  const Errc code = err == ETIMEDOUT                        ? Errc::timed_out
                    : (err == EPIPE || err == ECONNRESET)   ? Errc::peer_closed
                    : (err == EPROTO || err == EBADMSG || err == EMSGSIZE || err == ENOBUFS)
                        ? Errc::protocol
                        : errc_from_errno(err);
  throw Error(code, std::string(who) + ": " + what + ": " + std::strerror(err), err);
}

/// Receives the first bytes of the agent's first frame with the kernel's record of their sender,
/// then the rest of the frame. The payload size, or -errno.
long recv_first_frame(int fd, wire::Header& h, std::span<std::byte> buf, std::uint32_t max_message,
                      Deadline deadline, pid_t& sender) noexcept {
  auto* hp = reinterpret_cast<std::byte*>(&h);
  ssize_t got = 0;
  for (;;) {
    got = sys::recv_with_sender(fd, hp, sizeof h, MSG_DONTWAIT, &sender);
    if (got != -EAGAIN) break;
    if (deadline.expired()) return -ETIMEDOUT;
    if (int r = sys::poll_one(fd, POLLIN, deadline.poll_timeout_ms()); r < 0) return r;
  }
  if (got < 0) return got;
  if (got == 0) return -EPIPE;
  if (static_cast<std::size_t>(got) < sizeof h)
    if (int r = recv_exact(fd, hp + got, sizeof h - static_cast<std::size_t>(got), deadline); r < 0) return r;
  if (auto s = wire::check_header(h, max_message); s != wire::Status::ok) return -wire::to_errno(s);
  const std::uint32_t n = wire::payload_size(h);
  if (n > buf.size()) return -ENOBUFS;
  if (int r = recv_exact(fd, buf.data(), n, deadline); r < 0) return r;
  return static_cast<long>(n);
}

/// Throws the agent's refusal carried by an Error frame.
[[noreturn]] void refused(std::string_view who, std::string_view what, std::span<const std::byte> payload) {
  wire::ErrorView e;
  if (wire::decode_error(payload, e) != wire::Status::ok)
    fail(who, EPROTO, "malformed Error reply to " + std::string(what));
  throw Error(errc_from_errno(e.code),
              std::string(who) + ": the agent refused " + std::string(what) + " (" + std::string(e.detail) + ")",
              e.code);
}

}  // namespace

int decode_windows(std::span<const std::byte> payload, std::vector<WindowDesc>& out) noexcept {
  wire::Reader rd(payload);
  wire::SliceView<WindowDesc> ws;
  if (!rd.slice(ws) || rd.finish() != wire::Status::ok) return -EPROTO;
  std::vector<WindowDesc> v;
  try {
    v = ws.to_vector();
  } catch (...) {
    return -ENOMEM;
  }
  for (const auto& w : v)
    if (w.address + w.length < w.address) return -EPROTO;  // INVARIANT1 of WindowDesc
  out = std::move(v);
  return 0;
}

AgentSession handshake_with_agent(int fd, std::string_view who, std::uint32_t max_message,
                                  std::vector<std::string> features, Deadline deadline) {
  std::vector<std::byte> buf(std::max<std::size_t>(max_message, wire::kMinMaxMessage));
  // On before our Hello leaves: the agent answers only after it, so its Hello carries credentials.
  if (int r = sys::setsockopt_int(fd, SOL_SOCKET, SO_PASSCRED, 1); r < 0)
    fail(who, -r, "turning on SO_PASSCRED");
  wire::Hello mine;
  mine.max_message = max_message;
  mine.pid = ::getpid();
  mine.features = std::move(features);
  const std::uint32_t n = wire::encode_hello(buf, 0, mine);
  if (n == 0) throw Error(Errc::invalid_argument, std::string(who) + ": Hello does not fit max_message");
  if (int r = send_all(fd, buf.data(), n, deadline); r < 0) fail(who, -r, "sending Hello");

  AgentSession s;
  wire::Header h{};
  pid_t sender = 0;
  const long p = recv_first_frame(fd, h, buf, max_message, deadline, sender);
  if (p < 0) fail(who, static_cast<int>(-p), "receiving the agent's Hello");
  (void)sys::setsockopt_int(fd, SOL_SOCKET, SO_PASSCRED, 0);  // the data path needs no credentials
  const auto payload = std::span<const std::byte>(buf.data(), static_cast<std::size_t>(p));
  if (h.id == wire::ids::error) refused(who, "the Hello", payload);
  if (h.id != wire::ids::hello) fail(who, EPROTO, "the peer's first frame is not a Hello");
  if (auto st = wire::decode_hello(payload, s.hello); st != wire::Status::ok)
    fail(who, wire::to_errno(st), "the agent's Hello is malformed");
  if (!s.hello.has_feature("memory") || !s.hello.serves(mp::ids::read) ||
      !s.hello.serves(mp::ids::write) || !s.hello.serves(mp::ids::windows))
    throw Error(Errc::protocol, std::string(who) + ": the peer is not a memory agent (it does not "
                                                   "serve Read, Write and Windows)");
  if (s.hello.pid != sender)
    log().info("{}: the agent's Hello names pid {}, the kernel says the sender is pid {}: using {}", who,
               s.hello.pid, sender, sender);
  s.pid = sender;
  s.hello.pid = sender;
  s.max_message = wire::negotiate_max(max_message, s.hello.max_message);

  wire::Writer w(buf);
  w.begin(mp::ids::windows, 0);
  const std::uint32_t wn = w.finish();
  if (int r = send_all(fd, buf.data(), wn, deadline); r < 0) fail(who, -r, "asking the agent for its windows");
  const long q = recv_frame(fd, h, buf, s.max_message, deadline);
  if (q < 0) fail(who, static_cast<int>(-q), "receiving the agent's window list");
  const auto wp = std::span<const std::byte>(buf.data(), static_cast<std::size_t>(q));
  if (h.id == wire::ids::error) refused(who, "the window list", wp);
  if (h.id != mp::ids::windows || h.tag != 0) fail(who, EPROTO, "the reply to Windows is not a window list");
  if (int r = decode_windows(wp, s.windows); r < 0) fail(who, -r, "the agent's window list is malformed");
  return s;
}

}  // namespace shmkit::transport::detail
