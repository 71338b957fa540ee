#include "shmkit/transport/agent.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "shmkit/sys/error.hpp"
#include "shmkit/sys/log.hpp"
#include "shmkit/sys/sched.hpp"
#include "shmkit/sys/stream_io.hpp"
#include "shmkit/sys/syscall.hpp"
#include "shmkit/transport/frame_io.hpp"
#include "shmkit/transport/memory_protocol.hpp"
#include "shmkit/transport/splice_pipe.hpp"
#include "shmkit/transport/vm_lease.hpp"

namespace shmkit::transport {

namespace {

namespace mp = memproto;

struct Window {
  std::uint64_t address;
  std::uint64_t length;
  bool writable;
  int fd;                  // -1: no backing file
  std::uint64_t file_offset;
  bool splice_ok;          // false after splice said EINVAL for this window's file
};

// One connected client. The frame being received is kept here so that receiving is
// non-blocking across clients: INVARIANT1 have_header <= kHeaderSize;
// INVARIANT2 have_payload <= need_payload <= Agent::kMaxControlFrame.
struct Client {
  int fd = -1;
  bool handshaken = false;
  std::uint32_t max_message = 0;  // negotiated after Hello; before it, the agent's own
  wire::Header header{};
  std::size_t have_header = 0;
  std::uint32_t need_payload = 0;  // bytes of payload read into `payload` before dispatch
  std::size_t have_payload = 0;
  bool discard_rest = false;       // unknown id: payload beyond need_payload is skipped
  std::vector<std::byte> payload;  // capacity <= kMaxControlFrame
  bool closing = false;
  // Received bytes not yet consumed: one recv takes every request waiting in the socket (32 small
  // reads in flight are one system call, not 64). INVARIANT3: in_beg <= in_end <= in.size().
  std::vector<std::byte> in;       // kInputBuffer bytes, allocated on the first receive
  std::size_t in_beg = 0, in_end = 0;
  // Small replies not yet sent: they leave together in one send at the end of the client's turn
  // (or before any bigger reply, so the stream order is the request order).
  // INVARIANT4: out.size() <= kOutputBuffer.
  std::vector<std::byte> out;
  // The client's vm lease (vm_lease.hpp), when it asked for one: unexport_window() revokes the
  // window in it and waits for the client's transfers in flight.
  LeaseMapping lease;

  std::size_t buffered() const noexcept { return in_end - in_beg; }
};

constexpr int kMaxFramesPerTurn = 32;  // fairness: then the next ready client gets a turn
constexpr std::uint64_t kSpliceMinBytes = 4096;  // reads shorter than this are copied (see on_read)
constexpr std::size_t kInputBuffer = 64 * 1024;
constexpr std::size_t kOutputBuffer = 64 * 1024;
constexpr std::size_t kCoalesceMax = 16 * 1024;  // replies up to this size are gathered in `out`

}  // namespace

struct Agent::Impl {
  AgentOptions opts;
  mutable std::mutex mu;  // guards windows, pending, stats; held while a request is served
  std::vector<Window> windows;
  std::vector<int> pending;  // clients added, not yet picked up by the serving loop
  std::vector<Client> clients;  // touched only by the serving thread, under mu
  AgentStats stats;
  int wake_r = -1, wake_w = -1;
  std::atomic<bool> stop_requested{false};
  std::atomic<std::size_t> live_clients{0};  // clients.size() as of the last serve_once
  std::thread thread;
  std::unique_ptr<SplicePipe> pipe;  // created on first zero-copy use
  // A random value at a known address of this process, announced in Hello ("vm-cookie"): a client
  // that can read it with process_vm_readv at the announced pid knows the pid names this agent.
  std::uint64_t cookie = 0;
  std::array<std::byte, wire::kMinMaxMessage> small{};  // reply frames (Hello, Error, Windows)
  bool served_something = false;  // the last serve_once found activity (run() spins after it)

  explicit Impl(const AgentOptions& o) : opts(o) {
    if (opts.max_message < wire::kMinMaxMessage || opts.max_message > wire::kAbsoluteMaxMessage)
      throw Error(Errc::invalid_argument,
                  "Agent: max_message " + std::to_string(opts.max_message) + " outside [" +
                      std::to_string(wire::kMinMaxMessage) + ", " +
                      std::to_string(wire::kAbsoluteMaxMessage) + "]");
    int fds[2];
    sys::check(sys::pipe2(fds, O_NONBLOCK), "Agent: wake-up pipe");
    wake_r = fds[0];
    wake_w = fds[1];
    std::random_device rd;
    cookie = (std::uint64_t{rd()} << 32) ^ rd() ^ static_cast<std::uint64_t>(::getpid());
    if (cookie == 0) cookie = 1;
  }
  ~Impl() {
    for (auto& c : clients) close_client(c);  // a leased client's transfers end first
    for (int fd : pending) (void)sys::close(fd);
    (void)sys::close(wake_r);
    (void)sys::close(wake_w);
  }

  Deadline io_deadline() const noexcept { return Deadline::after(opts.io_timeout); }

  void wake() noexcept {
    char b = 1;
    (void)sys::write(wake_w, &b, 1);  // EAGAIN: already awake
  }

  // ---- buffered input and output ----------------------------------------------------------------

  // Non-blocking: up to n bytes for the frame being assembled, from the input buffer, refilled
  // with ONE recv of whatever the socket holds when it is empty. Bytes, 0 on EOF, or -errno.
  ssize_t take(Client& c, void* dst, std::size_t n) noexcept {
    if (c.buffered() == 0) {
      if (c.in.empty()) {
        try {
          c.in.resize(kInputBuffer);
        } catch (...) {
          return -ENOMEM;
        }
      }
      ssize_t r = sys::recv(c.fd, c.in.data(), c.in.size(), MSG_DONTWAIT);
      if (r <= 0) return r;
      c.in_beg = 0;
      c.in_end = static_cast<std::size_t>(r);
    }
    return static_cast<ssize_t>(take_buffered(c, dst, n));
  }
  // Bytes already buffered only (a Write's data, a discarded payload): copied to dst when dst is
  // non-null, dropped otherwise. Returns how many.
  static std::size_t take_buffered(Client& c, void* dst, std::uint64_t n) noexcept {
    const std::size_t k = static_cast<std::size_t>(std::min<std::uint64_t>(n, c.buffered()));
    if (dst != nullptr && k != 0) std::memcpy(dst, c.in.data() + c.in_beg, k);
    c.in_beg += k;
    return k;
  }
  // Discards exactly n bytes of the stream: buffered ones first, then from the socket.
  int discard(Client& c, std::uint64_t n) noexcept {
    n -= take_buffered(c, nullptr, n);
    return n == 0 ? 0 : recv_discard(c.fd, n, io_deadline());
  }

  // Sends the gathered small replies. False (and the client closing) when it cannot take them.
  bool flush(Client& c) noexcept {
    if (c.out.empty()) return !c.closing;
    int r = send_all(c.fd, c.out.data(), c.out.size(), io_deadline());
    c.out.clear();
    if (r < 0) c.closing = true;
    return r == 0;
  }
  // One reply frame, in order after everything sent before: small ones are gathered (sent at the
  // end of the turn, many in one send), bigger ones go out at once. False when the client is gone.
  bool reply(Client& c, iovec* iov, std::size_t n) noexcept {
    std::size_t total = 0;
    for (std::size_t i = 0; i < n; ++i) total += iov[i].iov_len;
    if (total <= kCoalesceMax) {
      if (c.out.size() + total > kOutputBuffer && !flush(c)) return false;
      try {
        if (c.out.capacity() < kOutputBuffer) c.out.reserve(kOutputBuffer);
      } catch (...) {
        c.closing = true;
        return false;
      }
      for (std::size_t i = 0; i < n; ++i) {
        const auto* b = static_cast<const std::byte*>(iov[i].iov_base);
        c.out.insert(c.out.end(), b, b + iov[i].iov_len);  // within the reserved capacity
      }
      return true;
    }
    if (!flush(c)) return false;
    if (send_all(c.fd, iov, n, io_deadline()) < 0) {
      c.closing = true;
      return false;
    }
    return true;
  }
  bool reply(Client& c, const void* p, std::size_t len) noexcept {
    iovec iov{const_cast<void*>(p), len};
    return reply(c, &iov, 1);
  }

  // ---- replies ---------------------------------------------------------------------------------

  // Sends an Error reply; false when the client cannot take it (it is then closed).
  bool send_error(Client& c, wire::Tag tag, wire::MsgId id, int code, std::string_view detail) {
    std::uint32_t n = wire::encode_error(small, tag, id, code, detail);
    ++stats.error_replies;
    ++stats.requests;
    if (n == 0 || !reply(c, small.data(), n)) {
      c.closing = true;
      return false;
    }
    return true;
  }
  // Malformed input: Error reply, then this client alone is closed.
  void reject(Client& c, wire::Tag tag, wire::MsgId id, int code, std::string_view detail) {
    log().debug("agent: closing client fd {}: {}", c.fd, detail);
    ++stats.malformed;
    (void)send_error(c, tag, id, code, detail);
    c.closing = true;
  }

  const Window* find(std::uint64_t address, std::uint64_t length) const noexcept {
    for (const auto& w : windows)
      if (mp::window_contains(w.address, w.length, address, length)) return &w;
    return nullptr;
  }

  SplicePipe* splice_pipe() {
    if (!pipe) {
      try {
        pipe = std::make_unique<SplicePipe>(opts.pipe_capacity);
      } catch (const Error& e) {
        log().warn("agent: no splice pipe ({}); serving with copies", e.what());
        return nullptr;
      }
    }
    return pipe.get();
  }
  // After a failed transfer the pipe may hold bytes of the broken stream.
  void reset_pipe() {
    if (pipe && pipe->buffered() != 0 && pipe->discard() != 0) pipe.reset();
  }

  // ---- request handlers ------------------------------------------------------------------------

  void on_hello(Client& c, std::span<const std::byte> payload) {
    wire::Hello peer;
    if (auto s = wire::decode_hello(payload, peer); s != wire::Status::ok)
      return reject(c, c.header.tag, wire::ids::hello, wire::to_errno(s),
                    std::string("bad Hello: ") + std::string(wire::to_string(s)));
    c.max_message = wire::negotiate_max(opts.max_message, peer.max_message);
    c.handshaken = true;
    wire::Hello mine;
    mine.max_message = opts.max_message;
    mine.pid = ::getpid();
    mine.ids = {mp::ids::windows, mp::ids::read, mp::ids::write, mp::ids::lease};
    mine.features = {"memory"};
    if (opts.zero_copy) mine.features.emplace_back("splice");
    char cookie_text[64];
    std::snprintf(cookie_text, sizeof cookie_text, "vm-cookie=%llx:%llx",
                  static_cast<unsigned long long>(reinterpret_cast<std::uintptr_t>(&cookie)),
                  static_cast<unsigned long long>(cookie));
    mine.features.emplace_back(cookie_text);
    std::uint32_t n = wire::encode_hello(small, c.header.tag, mine);
    ++stats.requests;
    if (n == 0 || !reply(c, small.data(), n)) c.closing = true;
  }

  void on_windows(Client& c, std::span<const std::byte> payload) {
    if (!payload.empty())
      return reject(c, c.header.tag, mp::ids::windows, EPROTO, "Windows request with a payload");
    const std::vector<mp::WindowDesc> descs = window_descs();
    std::vector<std::byte> buf(wire::kHeaderSize + 4 + descs.size() * sizeof(mp::WindowDesc));
    if (buf.size() > c.max_message)
      return (void)send_error(c, c.header.tag, mp::ids::windows, E2BIG,
                              "more windows than fit one frame");
    wire::Writer w(buf);
    w.begin(mp::ids::windows, c.header.tag);
    w.slice(std::span<const mp::WindowDesc>(descs));
    std::uint32_t n = w.finish();
    ++stats.requests;
    if (n == 0 || !reply(c, buf.data(), n)) c.closing = true;
  }

  std::vector<mp::WindowDesc> window_descs() const {
    std::vector<mp::WindowDesc> descs;
    descs.reserve(windows.size());
    for (const auto& w : windows)
      descs.push_back({w.address, w.length, mp::access_read | (w.writable ? mp::access_write : 0u),
                       (w.fd >= 0 && opts.zero_copy && w.splice_ok) ? mp::window_zero_copy : 0u});
    return descs;
  }

  void on_lease(Client& c, std::span<const std::byte> payload) {
    if (!payload.empty())
      return reject(c, c.header.tag, mp::ids::lease, EPROTO, "Lease request with a payload");
    if (c.lease)
      return (void)send_error(c, c.header.tag, mp::ids::lease, EALREADY, "this connection holds a lease already");
    if (windows.size() > kLeaseMaxWindows)
      return (void)send_error(c, c.header.tag, mp::ids::lease, E2BIG, "more windows than fit a lease page");
    int fd = -1;
    LeaseMapping lease;
    try {
      lease = LeaseMapping::create(window_descs(), &fd);
    } catch (const Error& e) {  // out of descriptors or memory: this client does without vm
      return (void)send_error(c, c.header.tag, mp::ids::lease, e.sys_errno() > 0 ? e.sys_errno() : ENOMEM, e.what());
    }
    if (!flush(c)) return (void)sys::close(fd);  // replies gathered before this one go first
    const int r = send_lease(c.fd, c.header.tag, fd, io_deadline());
    (void)sys::close(fd);  // the client has its own descriptor, the agent its mapping
    ++stats.requests;
    if (r < 0) return void(c.closing = true);
    c.lease = std::move(lease);
  }

  // Revokes `address` in every leased client and waits until none has a transfer in flight
  // (INVARIANT1 of vm_lease.hpp). A client still transferring after io_timeout is stuck or
  // hostile: its connection is shut down, so every later call of its VmTransport is -EPIPE.
  void revoke_in_leases(std::uint64_t address) {
    for (auto& c : clients)
      if (c.lease && c.lease.revoke(address)) wait_for_lease(c);
  }
  void wait_for_lease(Client& c) {
    const int r = c.lease.wait_until_idle(c.fd, io_deadline());
    if (r != -ETIMEDOUT) return;
    log().error("agent: a vm client kept a transfer in flight for {} ms after its window was revoked; "
                "shutting its connection down (a transfer still running may yet touch the window)",
                opts.io_timeout.count());
    (void)sys::shutdown(c.fd, SHUT_RDWR);
    c.closing = true;
  }

  void on_read(Client& c, std::span<const std::byte> payload) {
    wire::Reader r(payload);
    mp::ReadRequest req;
    if (!r.pod(req) || r.finish() != wire::Status::ok)
      return reject(c, c.header.tag, mp::ids::read, EPROTO, "Read request of the wrong size");
    if (req.length > mp::max_data(c.max_message))
      return (void)send_error(c, c.header.tag, mp::ids::read, EINVAL,
                              "Read longer than one frame may carry");
    Window* w = const_cast<Window*>(find(req.address, req.length));
    if (w == nullptr)
      return (void)send_error(c, c.header.tag, mp::ids::read, EFAULT,
                              "Read range is not inside an exported window");
    ++stats.requests;
    wire::Header h{static_cast<std::uint32_t>(wire::kHeaderSize + req.length), mp::ids::read, 0,
                   c.header.tag};
    const auto* src = reinterpret_cast<const std::byte*>(static_cast<std::uintptr_t>(req.address));
    std::uint64_t sent = 0;
    // A small reply is one writev of header and data; splicing it would cost three system calls
    // (header into the pipe, file into the pipe, pipe into the socket) to save a copy of a few
    // bytes. Splicing pays from about a page up.
    SplicePipe* p = (opts.zero_copy && w->fd >= 0 && w->splice_ok && req.length >= kSpliceMinBytes)
                        ? splice_pipe()
                        : nullptr;
    if (p != nullptr) {
      if (!flush(c)) return;  // replies gathered before this one go first
      auto off = static_cast<loff_t>(w->file_offset + (req.address - w->address));
      auto header = std::as_bytes(std::span<const wire::Header, 1>(&h, 1));
      ssize_t m = p->move(w->fd, &off, c.fd, nullptr, req.length, io_deadline(), header);
      // Bytes of the reply delivered: the header first, then data.
      const std::uint64_t delivered = p->moved();
      const std::uint64_t header_sent = std::min<std::uint64_t>(delivered, sizeof h);
      sent = delivered - header_sent;
      stats.bytes_spliced += sent;
      if (m >= 0) return;
      reset_pipe();
      if (m != -EINVAL) return void(c.closing = true);  // peer gone or stuck: stream broken
      // The file (or this socket) cannot splice: the memory is the source of truth, so send the
      // rest of the reply from it. Splicing stays off for this window.
      w->splice_ok = false;
      ++stats.splice_fallbacks;
      log().info("agent: splice refused (EINVAL) for window at {:#x}; copying from now on",
                 w->address);
      iovec rest[2] = {{reinterpret_cast<std::byte*>(&h) + header_sent, sizeof h - header_sent},
                       {const_cast<std::byte*>(src + sent), req.length - sent}};
      if (send_all(c.fd, rest, 2, io_deadline()) < 0) c.closing = true;
      stats.bytes_copied += req.length - sent;
      return;
    }
    iovec iov[2] = {{&h, sizeof h}, {const_cast<std::byte*>(src), req.length}};
    if (!reply(c, iov, 2)) return;
    stats.bytes_copied += req.length;
  }

  // The payload holds just the WriteRequest; its data is still in the socket.
  void on_write(Client& c, std::span<const std::byte> payload) {
    wire::Reader r(payload);
    mp::WriteRequest req;
    // on_header() checked header.length >= kWriteRequestPrefix, so the subtraction cannot wrap.
    if (!r.pod(req) || r.finish() != wire::Status::ok ||
        std::uint64_t{c.header.length} - mp::kWriteRequestPrefix != req.length)
      return reject(c, c.header.tag, mp::ids::write, EPROTO,
                    "Write request whose length does not match its frame");
    const Window* cw = find(req.address, req.length);
    int err = 0;
    const char* why = nullptr;
    if (cw == nullptr) {
      err = EFAULT;
      why = "Write range is not inside an exported window";
    } else if (!cw->writable) {
      err = EACCES;
      why = "Write to a read-only window";
    }
    if (err != 0) {
      // The frame length was checked against the maximum, so this discard is bounded.
      if (discard(c, req.length) < 0) return void(c.closing = true);
      return (void)send_error(c, c.header.tag, mp::ids::write, err, why);
    }
    Window* w = const_cast<Window*>(cw);
    auto* dst = reinterpret_cast<std::byte*>(static_cast<std::uintptr_t>(req.address));
    // Data that came with the request into the input buffer goes to memory first.
    std::uint64_t done = take_buffered(c, dst, req.length);
    stats.bytes_copied += done;
    // A small reply is one writev of header and data; splicing it would cost three system calls
    // (header into the pipe, file into the pipe, pipe into the socket) to save a copy of a few
    // bytes. Splicing pays from about a page up.
    SplicePipe* p = (opts.zero_copy && w->fd >= 0 && w->splice_ok &&
                     req.length - done >= kSpliceMinBytes)
                        ? splice_pipe()
                        : nullptr;
    if (p != nullptr) {
      auto off = static_cast<loff_t>(w->file_offset + (req.address - w->address) + done);
      ssize_t m = p->move(c.fd, nullptr, w->fd, &off, req.length - done, io_deadline());
      done += p->moved();
      stats.bytes_spliced += p->moved();
      if (m < 0 && m != -EINVAL) {
        reset_pipe();
        return void(c.closing = true);
      }
      if (m == -EINVAL) {
        // Bytes already taken from the socket wait in the pipe: they go to memory first.
        w->splice_ok = false;
        ++stats.splice_fallbacks;
        log().info("agent: splice refused (EINVAL) for window at {:#x}; copying from now on",
                   w->address);
        while (p->buffered() > 0) {
          ssize_t n = p->drain_to_memory(dst + done, p->buffered());
          if (n <= 0) {
            reset_pipe();
            return void(c.closing = true);
          }
          done += static_cast<std::uint64_t>(n);
          stats.bytes_copied += static_cast<std::uint64_t>(n);
        }
      }
    }
    if (done < req.length) {
      if (recv_exact(c.fd, dst + done, req.length - done, io_deadline()) < 0)
        return void(c.closing = true);
      stats.bytes_copied += req.length - done;
    }
    ++stats.requests;
    wire::Header h{wire::kHeaderSize, mp::ids::write, 0, c.header.tag};
    if (!reply(c, &h, sizeof h)) c.closing = true;
  }

  void dispatch(Client& c) {
    std::span<const std::byte> payload(c.payload.data(), c.have_payload);
    switch (c.header.id) {
      case wire::ids::hello: return on_hello(c, payload);
      case mp::ids::windows: return on_windows(c, payload);
      case mp::ids::read: return on_read(c, payload);
      case mp::ids::write: return on_write(c, payload);
      case mp::ids::lease: return on_lease(c, payload);
      default: break;
    }
    // Unknown id: its payload was skipped; the connection stays usable.
    (void)send_error(c, c.header.tag, c.header.id, EOPNOTSUPP, "unsupported message id");
  }

  // ---- receiving -------------------------------------------------------------------------------

  // Header complete: validates it and decides how much payload to read before dispatching.
  // False when the client was rejected.
  bool on_header(Client& c) {
    const wire::Header& h = c.header;
    std::uint32_t limit = c.handshaken ? c.max_message : opts.max_message;
    if (auto s = wire::check_header(h, limit); s != wire::Status::ok) {
      reject(c, h.tag, h.id, wire::to_errno(s), std::string("bad frame header: ") +
                                                   std::string(wire::to_string(s)));
      return false;
    }
    if (!c.handshaken && h.id != wire::ids::hello) {
      reject(c, h.tag, h.id, EPROTO, "the first frame must be Hello");
      return false;
    }
    if (c.handshaken && (h.id == wire::ids::hello || h.id == wire::ids::error)) {
      reject(c, h.tag, h.id, EPROTO, h.id == wire::ids::hello ? "second Hello" : "Error sent to the agent");
      return false;
    }
    std::uint32_t plen = wire::payload_size(h);
    c.discard_rest = false;
    switch (h.id) {
      case wire::ids::hello:
      case mp::ids::windows:
      case mp::ids::read:
      case mp::ids::lease:
        if (plen > kMaxControlFrame - wire::kHeaderSize) {
          reject(c, h.tag, h.id, EMSGSIZE, "control frame over the agent's control limit");
          return false;
        }
        c.need_payload = plen;
        break;
      case mp::ids::write:
        if (plen < sizeof(mp::WriteRequest)) {
          reject(c, h.tag, h.id, EBADMSG, "Write request shorter than its fixed part");
          return false;
        }
        c.need_payload = sizeof(mp::WriteRequest);  // the data stays in the socket for now
        break;
      default:
        c.need_payload = 0;
        c.discard_rest = plen > 0;
        break;
    }
    c.have_payload = 0;
    if (c.payload.size() < c.need_payload) c.payload.resize(c.need_payload);  // <= kMaxControlFrame
    return true;
  }

  // Reads what is available for this client and serves each complete request (at most
  // kMaxFramesPerTurn; the rest stay buffered for the next turn), then sends the gathered replies.
  void on_readable(Client& c) {
    serve_frames(c);
    (void)flush(c);  // also when closing: a rejected client still gets its Error reply
  }
  void serve_frames(Client& c) {
    for (int frames = 0; frames < kMaxFramesPerTurn && !c.closing;) {
      if (c.have_header < sizeof c.header) {
        auto* hb = reinterpret_cast<std::byte*>(&c.header);
        ssize_t n = take(c, hb + c.have_header, sizeof c.header - c.have_header);
        if (n == -EAGAIN) return;
        if (n == 0) {
          // EOF between frames is a normal goodbye; inside a header it is a truncated frame.
          if (c.have_header != 0) reject(c, 0, 0, EBADMSG, "connection ended inside a frame header");
          c.closing = true;
          return;
        }
        if (n < 0) return void(c.closing = true);
        c.have_header += static_cast<std::size_t>(n);
        if (c.have_header < sizeof c.header) continue;
        if (!on_header(c)) return;
      }
      if (c.have_payload < c.need_payload) {
        ssize_t n = take(c, c.payload.data() + c.have_payload, c.need_payload - c.have_payload);
        if (n == -EAGAIN) return;
        if (n == 0) {
          reject(c, c.header.tag, c.header.id, EBADMSG, "connection ended inside a frame");
          return;
        }
        if (n < 0) return void(c.closing = true);
        c.have_payload += static_cast<std::size_t>(n);
        if (c.have_payload < c.need_payload) continue;
      }
      // The request is complete (its fixed part, for Write): serve it.
      if (c.discard_rest && discard(c, wire::payload_size(c.header)) < 0) {
        c.closing = true;
        return;
      }
      dispatch(c);
      c.have_header = 0;
      c.have_payload = 0;
      c.need_payload = 0;
      ++frames;
    }
  }

  void close_client(Client& c) {
    if (c.lease) {
      // Nothing of the lease is watched once the client is gone from the list, so its transfers
      // end here: every window revoked, and the ones in flight waited for (INVARIANT1 of vm_lease.hpp).
      c.lease.revoke_all();
      if (c.lease.wait_until_idle(c.fd, io_deadline()) == -ETIMEDOUT)
        log().error("agent: closing a vm client with a transfer still in flight after {} ms",
                    opts.io_timeout.count());
    }
    (void)sys::close(c.fd);
    c.fd = -1;
    ++stats.clients_closed;
  }

  // Precondition: SIGPIPE is blocked in this thread (a splice into the socket of a client that
  // died raises it): serve_once() and run() hold a SigpipeBlock.
  std::size_t serve_once_unguarded(int timeout_ms) {
    {
      std::lock_guard<std::mutex> g(mu);
      for (int fd : pending) {
        Client c;
        c.fd = fd;
        c.max_message = opts.max_message;
        clients.push_back(std::move(c));
      }
      pending.clear();
    }
    std::vector<pollfd> pfds;
    pfds.reserve(clients.size() + 1);
    pfds.push_back({wake_r, POLLIN, 0});
    bool buffered = false;  // a client has input left over from its last turn: do not sleep
    for (const auto& c : clients) {
      pfds.push_back({c.fd, POLLIN, 0});
      buffered = buffered || c.buffered() != 0;
    }
    int r = sys::poll(pfds.data(), pfds.size(), buffered ? 0 : timeout_ms);
    if (r < 0) throw Error(Errc::system, "Agent: poll failed", -r);
    served_something = r > 0 || buffered;
    // Requests are served holding the lock: unexport_window() waits for the one in progress, and
    // stats are consistent. Waiting for activity (the poll above) does not hold it.
    std::lock_guard<std::mutex> g(mu);
    if (pfds[0].revents != 0) {
      char sink[64];
      while (sys::read(wake_r, sink, sizeof sink) > 0) {
      }
    }
    for (std::size_t i = 0; i < clients.size(); ++i) {
      if (pfds[i + 1].revents != 0 || clients[i].buffered() != 0) on_readable(clients[i]);
    }
    for (auto& c : clients)
      if (c.closing) close_client(c);
    std::erase_if(clients, [](const Client& c) { return c.fd < 0; });
    live_clients.store(clients.size(), std::memory_order_relaxed);  // a statistic: no ordering
    return clients.size();
  }
};

Agent::Agent(const AgentOptions& opts) : impl_(std::make_unique<Impl>(opts)) {}

Agent::~Agent() {
  try {
    stop();
  } catch (...) {
  }
}

void Agent::export_window(const ExportedWindow& ew) {
  auto address = static_cast<std::uint64_t>(reinterpret_cast<std::uintptr_t>(ew.address));
  if (ew.address == nullptr || ew.length == 0 || address + ew.length < address)
    throw Error(Errc::invalid_argument, "Agent::export_window: empty or wrapping window");
  std::lock_guard<std::mutex> g(impl_->mu);
  auto& ws = impl_->windows;
  // Re-exporting the same start address replaces the window (a segment that grew); vm clients
  // lose the old one as if it had been unexported.
  if (std::erase_if(ws, [&](const Window& w) { return w.address == address; }) > 0)
    impl_->revoke_in_leases(address);
  for (const auto& w : ws)
    if (address < w.address + w.length && w.address < address + ew.length)
      throw Error(Errc::invalid_argument, "Agent::export_window: window overlaps one already exported");
  ws.push_back({address, ew.length, ew.writable, ew.fd, ew.file_offset, true});
}

bool Agent::unexport_window(const void* address) {
  auto a = static_cast<std::uint64_t>(reinterpret_cast<std::uintptr_t>(address));
  // Holding mu: no socket request is being served (they are served under it), and the serving
  // thread does not touch the client list.
  std::lock_guard<std::mutex> g(impl_->mu);
  if (std::erase_if(impl_->windows, [&](const Window& w) { return w.address == a; }) == 0) return false;
  impl_->revoke_in_leases(a);
  return true;
}

void Agent::add_client(int fd) {
  if (sys::is_stream_socket(fd) != 1)
    throw Error(Errc::invalid_argument, "Agent::add_client: fd " + std::to_string(fd) +
                                            " is not a connected stream socket");
  sys::check(sys::set_nonblocking(fd, true), "Agent::add_client: O_NONBLOCK");
  if (impl_->opts.socket_buffer > 0) {
    // SO_SNDBUFFORCE passes net.core.wmem_max when privileged; otherwise SO_SNDBUF (capped).
    if (sys::setsockopt_int(fd, SOL_SOCKET, SO_SNDBUFFORCE, impl_->opts.socket_buffer) != 0)
      (void)sys::setsockopt_int(fd, SOL_SOCKET, SO_SNDBUF, impl_->opts.socket_buffer);
    if (sys::setsockopt_int(fd, SOL_SOCKET, SO_RCVBUFFORCE, impl_->opts.socket_buffer) != 0)
      (void)sys::setsockopt_int(fd, SOL_SOCKET, SO_RCVBUF, impl_->opts.socket_buffer);
  }
  {
    std::lock_guard<std::mutex> g(impl_->mu);
    impl_->pending.push_back(fd);
    ++impl_->stats.clients_added;
  }
  impl_->wake();
}

std::size_t Agent::serve_once(int timeout_ms) {
  SigpipeBlock no_sigpipe;
  return impl_->serve_once_unguarded(timeout_ms);
}

void Agent::run(bool until_no_clients) {
  SigpipeBlock no_sigpipe;
  using clock = std::chrono::steady_clock;
  const auto spin = impl_->opts.spin;
  auto last_active = clock::now() - spin;
  while (!impl_->stop_requested.load(std::memory_order_acquire)) {  // pairs with stop()'s release
    // Within `spin` of the last request, poll without sleeping: a client that sends its next
    // request soon (one that reads big ranges request by request) finds the agent awake instead
    // of paying for a wake-up from a halted CPU. Then block.
    const bool spinning = spin.count() > 0 && clock::now() - last_active < spin;
    std::size_t n = impl_->serve_once_unguarded(spinning ? 0 : -1);
    if (impl_->served_something) {
      last_active = clock::now();
    } else if (spinning) {
      (void)sys::yield_cpu();  // any other runnable task goes first: the spin steals no CPU
    }
    if (until_no_clients && n == 0) {
      std::lock_guard<std::mutex> g(impl_->mu);
      if (impl_->pending.empty()) return;
    }
  }
}

void Agent::start() {
  if (impl_->thread.joinable()) throw Error(Errc::invalid_argument, "Agent::start: already running");
  impl_->stop_requested.store(false, std::memory_order_relaxed);  // before the thread exists
  impl_->thread = std::thread([this] { run(false); });
}

void Agent::stop() {
  impl_->stop_requested.store(true, std::memory_order_release);  // pairs with run()'s acquire
  impl_->wake();
  if (impl_->thread.joinable()) impl_->thread.join();
}

std::size_t Agent::client_count() const {
  std::lock_guard<std::mutex> g(impl_->mu);
  return impl_->live_clients.load(std::memory_order_relaxed) + impl_->pending.size();
}

AgentStats Agent::stats() const {
  std::lock_guard<std::mutex> g(impl_->mu);
  return impl_->stats;
}

const AgentOptions& Agent::options() const noexcept { return impl_->opts; }

}  // namespace shmkit::transport
