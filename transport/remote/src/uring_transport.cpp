#include "shmkit/transport/uring_transport.hpp"

#include "agent_handshake.hpp"

#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <new>
#include <string>

#include "shmkit/sys/error.hpp"
#include "shmkit/sys/log.hpp"
#include "shmkit/sys/sched.hpp"
#include "shmkit/sys/stream_io.hpp"
#include "shmkit/sys/syscall.hpp"
#include "shmkit/transport/frame_io.hpp"
#include "shmkit/transport/memory_protocol.hpp"

namespace shmkit::transport {
namespace mp = memproto;
namespace {
constexpr std::uint32_t kNone = UINT32_MAX;
// Tokens of the transport's own ring operations (its mailbox sees only these).
constexpr std::uint64_t kSendToken = 1;
constexpr std::uint64_t kRecvToken = 2;
constexpr std::size_t kMaxIov = 64;                    // frames per SENDMSG
constexpr std::size_t kDirectMin = 64 * 1024;          // read payloads received in place
constexpr std::size_t kSmallBite = 4096;               // staging receive while those are pending
constexpr std::size_t kCompactBelow = 64 * 1024;       // staging room that triggers compaction
constexpr std::size_t kMaxChunk = std::size_t{1} << 20;
static_assert(kMaxIov * sizeof(iovec) + sizeof(msghdr) <= SpanArena::kMinClass);
static_assert(kMaxChunk + wire::kHeaderSize + sizeof(mp::WriteRequest) <= SpanArena::kMaxClass,
              "a chunk's frame fits the largest size class");

// A peer that went away is -EPIPE whichever way the kernel said it.
int peer_error(int err) noexcept {
  return (err == -ECONNRESET || err == -ENOTCONN || err == -ESHUTDOWN) ? -EPIPE : err;
}
// The fewest bytes a chunk's reply can have: its Read/Write reply, or an Error reply (header,
// ErrorFixed, detail length), whichever is shorter.
constexpr std::uint64_t kErrorReplyMin = wire::kHeaderSize + sizeof(wire::ErrorFixed) + 4;
std::uint64_t min_reply(wire::MsgId id, std::uint64_t len) noexcept {
  const std::uint64_t ok = wire::kHeaderSize + (id == mp::ids::read ? len : 0);
  return std::min(ok, kErrorReplyMin);
}

// Results after which the same operation is simply submitted again. -ECANCELED: io_uring ties
// a request to the thread that submitted it and cancels it when that thread exits; a cancelled
// send or receive moved no bytes, and any requester thread may have submitted ours.
bool retryable(int res) noexcept { return res == -EINTR || res == -EAGAIN || res == -ECANCELED; }
}  // namespace

// ---- UringRequest ------------------------------------------------------------------------------

UringRequest::~UringRequest() {
  if (owner_ != nullptr) owner_->abandon(*this);
}

// ---- set-up ------------------------------------------------------------------------------------

UringTransport::UringTransport(int fd, const UringTransportOptions& opts) : fd_(fd), opts_(opts) {
  if (opts.chunk < 4096 || opts.chunk > kMaxChunk || opts.max_chunks == 0 ||
      opts.arena_bytes < 2 * SpanArena::kMaxClass + SpanArena::kMinClass) {
    throw Error(Errc::invalid_argument,
                "UringTransport: chunk must be 4 KiB..1 MiB, max_chunks > 0 and arena_bytes >= "
                "4 MiB + 2 KiB (the receive buffer and one chunk frame)");
  }
  // The ring first: where io_uring is unavailable this throws Errc::unsupported before the
  // socket is touched, so the caller can fall back to the socket transport on the same fd.
  UringRing::Options ro;
  ro.sq_entries = opts.ring_entries;
  ro.cq_entries = 2 * opts.ring_entries;
  ro.max_in_flight = 16;  // the transport's own operations: one send, one receive
  ring_ = std::make_unique<UringRing>(ro);
  try {
    arena_ = std::make_unique<SpanArena>(opts.arena_bytes);
    if (opts.fixed_buffers) {
      if (int r = ring_->register_buffer(arena_->base(), arena_->capacity()); r < 0) {
        log().debug("UringTransport: arena not registered as a fixed buffer ({}); plain I/O",
                    std::strerror(-r));
      }
    }
    io_mb_ = std::make_unique<UringMailbox>(*ring_);
    if (arena_->try_allocate(SpanArena::kMaxClass, &staging_) != AllocStatus::ok ||
        arena_->try_allocate(kMaxIov * sizeof(iovec) + sizeof(msghdr), &send_iov_) != AllocStatus::ok) {
      throw Error(Errc::out_of_memory, "UringTransport: arena too small for its buffers");
    }
    chunks_.resize(opts.max_chunks);
    for (std::uint32_t i = 0; i < chunks_.size(); ++i) {
      chunks_[i].next = i + 1 < chunks_.size() ? i + 1 : kNone;
    }
    free_chunk_ = 0;
    handshake();
  } catch (...) {
    io_mb_.reset();
    ring_.reset();
    if (opts.own_fd) (void)sys::close(fd_);
    throw;
  }
  std::lock_guard lk(mu_);
  start_recv_locked(true);
}

void UringTransport::handshake() {
  detail::AgentSession session = detail::handshake_with_agent(fd_, "UringTransport", opts_.max_message,
                                                              {"uring"}, Deadline::after(opts_.io_timeout));
  peer_ = std::move(session.hello);
  max_message_ = session.max_message;
  chunk_ = static_cast<std::size_t>(std::min<std::uint64_t>(opts_.chunk, mp::max_data(max_message_)));
  windows_ = std::move(session.windows);
}

UringTransport::~UringTransport() {
  {
    std::lock_guard lk(mu_);
    break_locked(-EPIPE);  // shuts the socket down: the in-flight receive (and send) end now
  }
  // Collect the transport's own operations before the ring and arena go away.
  UringCompletion c;
  while (ring_->wait(*io_mb_, &c, 2000) == 0) {
    std::lock_guard lk(mu_);
    handle_locked(c);
  }
  io_mb_.reset();
  ring_.reset();
  arena_.reset();
  if (opts_.own_fd) (void)sys::close(fd_);
}

// ---- requests ----------------------------------------------------------------------------------

int UringTransport::read_async(std::uint64_t remote, void* local, std::size_t len,
                               UringRequest& req) noexcept {
  std::lock_guard lk(mu_);
  return submit_locked(mp::ids::read, remote, static_cast<std::byte*>(local), len, req);
}

int UringTransport::write_async(std::uint64_t remote, const void* local, std::size_t len,
                                UringRequest& req) noexcept {
  std::lock_guard lk(mu_);
  // The bytes are copied into the arena before this returns; the cast never leads to a write.
  return submit_locked(mp::ids::write, remote,
                       const_cast<std::byte*>(static_cast<const std::byte*>(local)), len, req);
}

int UringTransport::submit_locked(wire::MsgId id, std::uint64_t remote, std::byte* buf,
                                  std::size_t len, UringRequest& req) noexcept {
  if (req.owner_ != nullptr) return -EBUSY;
  if (broken_ != 0) return -EPIPE;
  if (len != 0 && remote + len < remote) return -EFAULT;  // wraps: inside no window
  req.owner_ = this;
  req.chunks_left_ = 0;
  req.result_ = 0;
  // A write chunk leaves room for its request header, so its frame is exactly one size class.
  const std::size_t per = id == mp::ids::write ? chunk_ - mp::kWriteRequestPrefix : chunk_;
  for (std::size_t done = 0; done < len;) {
    const std::size_t n = std::min(per, len - done);
    int r = queue_chunk_locked(id, remote + done, buf + done, n, req);
    if (r < 0) {
      if (req.chunks_left_ == 0) {  // nothing queued: refuse the whole request
        req.owner_ = nullptr;
        return r;
      }
      req.result_ = r;  // part is in flight: the request completes, with this error
      break;
    }
    done += n;
  }
  // Batching: the frame waits for the caller's wait()/test() (or the next request's), so every
  // request queued before it leaves in ONE SENDMSG carried by the io_uring_enter that also
  // waits (32 reads queued back to back: one send, one agent wake-up). When another thread is
  // blocked in the ring it would not carry them: they go now.
  if (driving_) start_send_locked(true);
  return 0;
}

int UringTransport::queue_chunk_locked(wire::MsgId id, std::uint64_t remote, std::byte* buf,
                                       std::size_t len, UringRequest& req) noexcept {
  if (free_chunk_ == kNone) return -ENOBUFS;
  const std::size_t frame_len = id == mp::ids::read ? mp::kReadRequestFrame : mp::kWriteRequestPrefix + len;
  SpanArena::Span s;
  if (arena_->try_allocate(frame_len, &s) != AllocStatus::ok) return -ENOBUFS;
  const std::uint32_t idx = free_chunk_;
  Chunk& c = chunks_[idx];
  const wire::Tag tag = (std::uint64_t{c.gen} << 32) | idx;
  wire::Writer w(std::span<std::byte>(s.data, s.size));
  w.begin(id, tag);
  if (id == mp::ids::read) {
    w.pod(mp::ReadRequest{remote, len});
  } else {
    w.pod(mp::WriteRequest{remote, len});
    w.bytes(std::span<const std::byte>(buf, len));  // into non-moving memory, before returning
  }
  const std::uint32_t n = w.finish();
  if (n == 0) {
    arena_->free(s);
    return -EINVAL;
  }
  free_chunk_ = c.next;
  c.next = kNone;
  c.in_use = true;
  c.req = &req;
  c.dst = id == mp::ids::read ? buf : nullptr;
  c.len = len;
  c.id = id;
  c.arena_dst = id == mp::ids::read && len >= kDirectMin && arena_->contains(buf, len);
  if (c.arena_dst) ++arena_chunks_;
  min_pending_ += min_reply(id, len);
  ++live_chunks_;
  ++req.chunks_left_;
  unsent_.push_back(Frame{s, n});
  ++stats_.requests;
  return 0;
}

int UringTransport::wait(UringRequest& req, int timeout_ms) noexcept {
  using clock = std::chrono::steady_clock;
  const auto deadline = clock::now() + std::chrono::milliseconds(timeout_ms < 0 ? 0 : timeout_ms);
  std::unique_lock lk(mu_);
  if (req.owner_ != this) return -EINVAL;
  for (;;) {
    if (req.chunks_left_ == 0) {
      req.owner_ = nullptr;
      return req.result_;
    }
    int ms = -1;
    if (timeout_ms >= 0) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - clock::now()).count();
      if (left <= 0) {
        abandon_locked(lk, req);
        return -ETIMEDOUT;
      }
      ms = static_cast<int>(left);
    }
    drive_locked(lk, ms);
  }
}

bool UringTransport::test(UringRequest& req, int* result) noexcept {
  std::unique_lock lk(mu_);
  if (req.owner_ != this) {
    *result = -EINVAL;
    return true;
  }
  if (!driving_) {
    start_send_locked(false);  // flushed by try_receive
    UringCompletion c;
    while (ring_->try_receive(*io_mb_, &c)) handle_locked(c);
    cv_.notify_all();
  } else {
    start_send_locked(true);
  }
  if (req.chunks_left_ != 0) return false;
  req.owner_ = nullptr;
  *result = req.result_;
  return true;
}

void UringTransport::abandon(UringRequest& req) noexcept {
  std::unique_lock lk(mu_);
  if (req.owner_ == this) abandon_locked(lk, req);
}

void UringTransport::abandon_locked(std::unique_lock<std::mutex>& lk, UringRequest& req) noexcept {
  // Its chunks stay reserved until their replies arrive (tags stay unique), but nothing is
  // delivered to req or its buffer any more.
  bool receiving_into_req = false;
  for (std::uint32_t i = 0; i < chunks_.size(); ++i) {
    Chunk& c = chunks_[i];
    if (!c.in_use || c.req != &req) continue;
    if (i == direct_chunk_) receiving_into_req = true;
    c.req = nullptr;
  }
  req.chunks_left_ = 0;
  req.owner_ = nullptr;
  if (!receiving_into_req) return;
  // A reply is arriving straight into req's buffer (a big read into arena memory, INVARIANT9):
  // the kernel's receive into it cannot be redirected, and the stream position is the middle of
  // that payload. Break the stream (shutdown ends the receive at once) and wait for the receive's
  // completion, so that no byte lands in the buffer once this returns (the caller may reuse it).
  break_locked(-ETIMEDOUT);
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (recv_in_flight_ && std::chrono::steady_clock::now() < give_up) drive_locked(lk, 100);
  if (recv_in_flight_)
    log().error("UringTransport on fd {}: a receive into an abandoned buffer did not end in 10 s "
                "after shutdown", fd_);
}

void UringTransport::drive_locked(std::unique_lock<std::mutex>& lk, int timeout_ms) noexcept {
  if (driving_) {
    // Another thread waits on the ring for everyone and wakes us when it handled something.
    // Frames queued while nobody drove would wait for it: send them now.
    start_send_locked(true);
    if (timeout_ms < 0) {
      cv_.wait(lk);
    } else {
      cv_.wait_for(lk, std::chrono::milliseconds(timeout_ms));
    }
    return;
  }
  start_send_locked(false);  // queued frames go with the io_uring_enter that waits
  driving_ = true;
  lk.unlock();
  UringCompletion c;
  int r = -ETIME;
  bool got = false;
  const auto spin = opts_.spin;
  if (spin.count() > 0 && timeout_ms != 0) {
    // Peek the completion queue (yielding the CPU between peeks) before sleeping in the kernel:
    // a reply on its way then costs no wake-up. Each yield's return to user space also runs the
    // ring's pending task work, which is what posts a socket receive's completion.
    const auto until = std::chrono::steady_clock::now() + spin;
    do {
      if (ring_->try_receive(*io_mb_, &c, /*flush=*/true)) {
        got = true;
        break;
      }
      (void)sys::yield_cpu();
    } while (std::chrono::steady_clock::now() < until);
  }
  r = got ? 0 : ring_->wait(*io_mb_, &c, timeout_ms);
  lk.lock();
  if (r == 0) {
    handle_locked(c);
    while (ring_->try_receive(*io_mb_, &c, /*flush=*/false)) handle_locked(c);
  } else if (r != -ETIME && r != -ENOMSG) {
    break_locked(r);
  } else if (r == -ENOMSG && broken_ == 0) {
    break_locked(-EPIPE);  // no receive in flight on a live stream cannot happen: be safe
  }
  driving_ = false;
  cv_.notify_all();
}

void UringTransport::handle_locked(const UringCompletion& c) noexcept {
  if (c.token == kSendToken) {
    on_send_locked(c.res);
  } else if (c.token == kRecvToken) {
    on_recv_locked(c.res);
  }
}

// ---- sending -----------------------------------------------------------------------------------

void UringTransport::start_send_locked(bool flush) noexcept {
  if (send_in_flight_ || unsent_.empty() || broken_ != 0) return;
  auto* iov = reinterpret_cast<iovec*>(send_iov_.data);
  std::size_t n = 0;
  for (auto it = unsent_.begin(); it != unsent_.end() && n < kMaxIov; ++it, ++n) {
    const std::size_t skip = n == 0 ? send_off_ : 0;
    ::new (static_cast<void*>(&iov[n])) iovec{it->span.data + skip, it->len - skip};
  }
  auto* msg = ::new (static_cast<void*>(send_iov_.data + kMaxIov * sizeof(iovec))) msghdr{};
  msg->msg_iov = iov;
  msg->msg_iovlen = n;
  const int fd = fd_;
  int r = ring_->submit(*io_mb_, kSendToken, [&](io_uring_sqe* sqe) {
    io_uring_prep_sendmsg(sqe, fd, msg, MSG_NOSIGNAL);
  }, flush);
  if (r < 0) return break_locked(r);
  send_in_flight_ = true;
  ++stats_.sends;
}

void UringTransport::on_send_locked(int res) noexcept {
  send_in_flight_ = false;
  if (res < 0 && !retryable(res)) {
    break_locked(peer_error(res));
  } else if (res > 0) {
    // Release the frames sent whole; remember how far into the next one the stream is.
    auto left = static_cast<std::size_t>(res);
    while (left > 0 && !unsent_.empty()) {
      Frame& f = unsent_.front();
      const std::size_t rest = f.len - send_off_;
      if (left < rest) {
        send_off_ += left;
        break;
      }
      left -= rest;
      arena_->free(f.span);
      unsent_.pop_front();
      send_off_ = 0;
    }
  }
  if (broken_ != 0) {
    for (auto& f : unsent_) arena_->free(f.span);
    unsent_.clear();
    send_off_ = 0;
    return;
  }
  start_send_locked(false);  // goes with the driver's next io_uring_enter
}

// ---- receiving ---------------------------------------------------------------------------------

void UringTransport::start_recv_locked(bool flush) noexcept {
  if (recv_in_flight_ || broken_ != 0) return;
  std::byte* p;
  std::size_t n;
  bool waitall = false;
  if (direct_chunk_ != kNone) {
    const Chunk& c = chunks_[direct_chunk_];
    p = c.dst + direct_done_;
    n = static_cast<std::size_t>(c.len - direct_done_);
    // The whole rest of the payload in one MSG_WAITALL receive straight into the destination:
    // one completion (one wake-up of the requester) per reply, as the socket transport's
    // blocking recv(MSG_WAITALL). A READ_FIXED first would complete with whatever had arrived
    // (a partial read on a stream socket) and cost one more wake-up per reply.
    waitall = true;
  } else {
    if (rbeg_ == rend_) {
      rbeg_ = rend_ = 0;
    } else if (rbeg_ > 0 && (staging_.size - rend_ < kCompactBelow || staging_.size - rbeg_ < need_)) {
      std::memmove(staging_.data, staging_.data + rbeg_, rend_ - rbeg_);
      rend_ -= rbeg_;
      rbeg_ = 0;
    }
    p = staging_.data + rend_;
    n = staging_.size - rend_;
    if (n == 0) return break_locked(-EPROTO);  // a frame larger than any reply we asked for
    // While big reads into arena memory are in flight, take small bites: a reply's header then
    // arrives before most of its payload, which is received in place (see parse_locked). The
    // receive posted while idle is small too: the next requests may be such reads.
    if (arena_chunks_ != 0 || live_chunks_ == 0) n = std::min(n, kSmallBite);
    // Wake once per many replies, not once per reply: every chunk in flight will certainly
    // send at least min_reply() bytes, so a MSG_WAITALL receive of that many (less what is
    // already here) never waits for bytes that are not coming, and a dying peer still ends it.
    const std::uint64_t here = rend_ - rbeg_;
    if (min_pending_ > here) {
      n = static_cast<std::size_t>(std::min<std::uint64_t>(n, min_pending_ - here));
      waitall = true;
    }
  }
  const bool fixed = !waitall && ring_->has_fixed_buffer() && arena_->contains(p, n);
  const int fd = fd_;
  int r = ring_->submit(*io_mb_, kRecvToken, [&](io_uring_sqe* sqe) {
    if (fixed) {
      io_uring_prep_read_fixed(sqe, fd, p, static_cast<unsigned>(n), 0, 0);
    } else {
      io_uring_prep_recv(sqe, fd, p, n, waitall ? MSG_WAITALL : 0);
    }
  }, flush);
  if (r < 0) return break_locked(r);
  recv_in_flight_ = true;
  recv_target_ = p;
  recv_len_ = n;
}

void UringTransport::on_recv_locked(int res) noexcept {
  recv_in_flight_ = false;
  recv_target_ = nullptr;
  recv_len_ = 0;
  ++stats_.receives;
  if (broken_ != 0) {
    // The stream is gone and every chunk completed: what this receive brought is dropped.
  } else if (res == 0) {
    break_locked(-EPIPE);  // the agent closed (or died)
  } else if (res < 0 && !retryable(res)) {
    break_locked(peer_error(res));
  } else if (res > 0) {
    if (direct_chunk_ != kNone) {
      direct_done_ += static_cast<std::uint64_t>(res);
      stats_.direct_bytes += static_cast<std::uint64_t>(res);
      if (direct_done_ == chunks_[direct_chunk_].len) {
        const std::uint32_t idx = direct_chunk_;
        direct_chunk_ = kNone;
        complete_chunk_locked(idx, 0);
      }
    } else {
      rend_ += static_cast<std::size_t>(res);
    }
    parse_locked();
  }
  if (direct_chunk_ == kNone || broken_ != 0) {
    // No receive targets a caller's arena span any more: do the releases it held back.
    for (auto& s : deferred_release_) arena_->free(s);
    deferred_release_.clear();
  }
  start_recv_locked(false);  // goes with the driver's next io_uring_enter
}

void UringTransport::parse_locked() noexcept {
  need_ = 0;
  while (broken_ == 0 && direct_chunk_ == kNone && rend_ - rbeg_ >= wire::kHeaderSize) {
    std::byte* at = staging_.data + rbeg_;
    const std::size_t avail = rend_ - rbeg_;
    wire::Header h;
    std::memcpy(&h, at, sizeof h);
    if (wire::check_header(h, max_message_) != wire::Status::ok) return break_locked(-EPROTO);
    const auto idx = static_cast<std::uint32_t>(h.tag & 0xffffffffu);
    const auto gen = static_cast<std::uint32_t>(h.tag >> 32);
    // A reply must name a chunk in flight, by index and generation (bounds-checked first).
    if (idx >= chunks_.size() || !chunks_[idx].in_use || chunks_[idx].gen != gen) {
      return break_locked(-EPROTO);
    }
    Chunk& c = chunks_[idx];
    const std::size_t payload = wire::payload_size(h);
    if (h.length > staging_.size) return break_locked(-EPROTO);  // we never ask for such
    if (h.id == wire::ids::error) {
      if (avail < h.length) {
        need_ = h.length;
        return;
      }
      wire::ErrorView ev;
      const bool ok = wire::decode_error(std::span<const std::byte>(at + wire::kHeaderSize, payload), ev) ==
                      wire::Status::ok;
      rbeg_ += h.length;
      complete_chunk_locked(idx, ok && ev.code > 0 ? -ev.code : -EPROTO);
      continue;
    }
    if (h.id != c.id) return break_locked(-EPROTO);
    if (c.id == mp::ids::write) {
      if (payload != 0) return break_locked(-EPROTO);
      rbeg_ += h.length;
      complete_chunk_locked(idx, 0);
      continue;
    }
    if (payload != c.len) return break_locked(-EPROTO);  // a Read reply is exactly the length asked
    if (avail >= h.length) {
      if (c.req != nullptr) {
        std::memcpy(c.dst, at + wire::kHeaderSize, payload);
        stats_.copied_bytes += payload;
      }
      rbeg_ += h.length;
      complete_chunk_locked(idx, 0);
      continue;
    }
    if (c.req != nullptr && c.arena_dst) {
      // A big read into arena memory: copy what came with the header, receive the rest in place.
      const std::size_t have = avail - wire::kHeaderSize;
      std::memcpy(c.dst, at + wire::kHeaderSize, have);
      stats_.copied_bytes += have;
      rbeg_ = rend_ = 0;
      direct_chunk_ = idx;
      direct_done_ = have;
      return;
    }
    need_ = h.length;
    return;
  }
}

void UringTransport::complete_chunk_locked(std::uint32_t idx, int err) noexcept {
  Chunk& c = chunks_[idx];
  if (c.req != nullptr) {
    UringRequest& r = *c.req;
    if (err != 0 && r.result_ == 0) r.result_ = err;
    --r.chunks_left_;
  } else {
    ++stats_.late_replies;
  }
  if (c.arena_dst) --arena_chunks_;
  min_pending_ -= min_reply(c.id, c.len);
  c.arena_dst = false;
  c.in_use = false;
  c.req = nullptr;
  c.dst = nullptr;
  if (++c.gen == 0) c.gen = 1;  // a late or forged tag of the old generation never matches
  c.next = free_chunk_;
  free_chunk_ = idx;
  --live_chunks_;
}

void UringTransport::break_locked(int err) noexcept {
  if (broken_ != 0) return;
  log().debug("UringTransport on fd {}: stream broken ({}); failing {} requests in flight", fd_,
              std::strerror(err < 0 ? -err : EPIPE), live_chunks_);
  broken_ = err < 0 ? err : -EPIPE;
  if (broken_ != -EPROTO && broken_ != -ETIMEDOUT) broken_ = -EPIPE;
  // Every request in flight completes now, with the error; nothing more is delivered.
  for (std::uint32_t i = 0; i < chunks_.size(); ++i) {
    if (chunks_[i].in_use) complete_chunk_locked(i, broken_);
  }
  direct_chunk_ = kNone;  // its chunk is completed: a receive still in flight delivers nothing
  if (!send_in_flight_) {
    for (auto& f : unsent_) arena_->free(f.span);
    unsent_.clear();
    send_off_ = 0;
  }
  // Ends the in-flight receive and send at once (the kernel completes them with 0 / -EPIPE).
  (void)sys::shutdown(fd_, SHUT_RDWR);
  cv_.notify_all();
}

// ---- buffers, blocking calls, misc ---------------------------------------------------------

SpanArena::Span UringTransport::allocate(std::size_t n) noexcept {
  std::lock_guard lk(mu_);
  SpanArena::Span s;
  if (arena_->try_allocate(n, &s) != AllocStatus::ok) return {};
  return s;
}

void UringTransport::release(const SpanArena::Span& s) noexcept {
  std::lock_guard lk(mu_);
  if (!s) return;
  const bool targeted = recv_in_flight_ && recv_target_ != nullptr &&
                        recv_target_ < s.data + s.size && s.data < recv_target_ + recv_len_;
  if (targeted) {
    deferred_release_.push_back(s);  // the kernel may still write there: free when it is done
  } else {
    arena_->free(s);
  }
}

int UringTransport::blocking(wire::MsgId id, std::uint64_t remote, std::byte* buf,
                             std::size_t len) noexcept {
  // Pieces small enough that half the arena (beside the receive buffer) holds their frames, so
  // a blocking call never starves on arena space it holds itself (writes copy their data in).
  const std::size_t frame_room = (arena_->capacity() - SpanArena::kMaxClass) / 2;
  const std::size_t piece_max =
      id == mp::ids::read
          ? chunk_ * 64
          : std::max<std::size_t>(1, frame_room / SpanArena::size_class(chunk_)) *
                (chunk_ - mp::kWriteRequestPrefix);
  const auto deadline = std::chrono::steady_clock::now() + opts_.io_timeout;
  for (std::size_t done = 0; done < len;) {
    const std::size_t n = std::min(piece_max, len - done);
    UringRequest req;
    int r;
    for (;;) {
      {
        std::lock_guard lk(mu_);
        r = submit_locked(id, remote + done, buf + done, n, req);
      }
      if (r != -ENOBUFS || std::chrono::steady_clock::now() >= deadline) break;
      // Other requesters hold the arena or the chunk slots: let their replies come in.
      std::unique_lock lk(mu_);
      drive_locked(lk, 1);
    }
    if (r < 0) return r;
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now()).count();
    r = wait(req, static_cast<int>(std::max<long long>(left, 1)));
    if (r < 0) return r;
    done += n;
  }
  return 0;
}

int UringTransport::read(std::uint64_t remote, void* local, std::size_t len) noexcept {
  return blocking(mp::ids::read, remote, static_cast<std::byte*>(local), len);
}

int UringTransport::write(std::uint64_t remote, const void* local, std::size_t len) noexcept {
  return blocking(mp::ids::write, remote,
                  const_cast<std::byte*>(static_cast<const std::byte*>(local)), len);
}

bool UringTransport::broken() const noexcept {
  std::lock_guard lk(mu_);
  return broken_ != 0;
}

UringTransportStats UringTransport::stats() const noexcept {
  std::lock_guard lk(mu_);
  return stats_;
}

}  // namespace shmkit::transport
