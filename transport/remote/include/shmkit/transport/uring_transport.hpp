/// UringTransport: the memory transport over io_uring. It speaks the socket transport's protocol
/// (wire.hpp + memory_protocol.hpp) to the same Agent, over any connected stream socket, but keeps
/// many requests in flight and lets one submission carry many of them.
///
/// User-facing shape: futures. A UringRequest is a small, caller-owned future:
///
///     UringRequest r[32];
///     for (int i = 0; i < 32; ++i) t.read_async(remote + 64 * i, dst + 64 * i, 64, r[i]);
///     for (auto& q : r) if (int e = t.wait(q); e != 0) ...;   // 0 or -errno, per request
///
/// read_async/write_async return at once (0, or -errno when the request could not be queued);
/// wait(r) returns the request's own result; test(r) polls without blocking. As with io_uring
/// itself, queued requests leave at the next wait() or test() (any request's), all in one send;
/// while another thread is blocked in wait() they leave at once. Every request is
/// completed exactly once and its result delivered to its own UringRequest, whichever thread
/// happens to drive the ring. read()/write() (the MemoryTransport interface) are the blocking
/// convenience calls: async + wait with the io_timeout. The transport is thread-safe: any number
/// of threads may issue and wait at once (each on its own UringRequests).
///
/// How it works (uring_transport.cpp for detail):
///  * Requests are split into chunks of at most `chunk` bytes; each chunk is one wire request whose
///    tag (slot index + generation) names it. Replies come back on the stream in order, each
///    matched to its chunk by tag and delivered to the chunk's UringRequest — the wire-level
///    counterpart of UringRing's user_data mailboxes.
///  * Every byte the kernel touches lives in a SpanArena (request frames, the sendmsg iovecs, the
///    receive staging buffer); the arena is registered with the ring as a fixed buffer. One
///    SENDMSG is in flight at a time and carries every frame queued meanwhile (a partial send is
///    continued, never interleaved); one receive is always in flight and pulls replies.
///  * The caller's buffers are never handed to the kernel: read data is copied from the staging
///    buffer into them. A read whose destination lies in this transport's arena (allocate())
///    is received straight into it instead, with READ_FIXED, for big chunks: zero extra copies.
///  * A peer that dies or a stream that breaks (EOF, reset, malformed reply) completes every
///    request in flight with an error (-EPIPE, -ECONNRESET, -EPROTO); later calls return -EPIPE.
///    A wait that times out abandons its request (-ETIMEDOUT): a late reply is discarded, never
///    written to the caller's buffer. When the reply was already being received straight into
///    the caller's arena buffer, the stream position is lost: the transport breaks (later calls
///    return -ETIMEDOUT) and the timed-out wait returns only once the kernel's receive into that
///    buffer has ended.
///
/// Where io_uring is unavailable the constructor throws shmkit::Error(Errc::unsupported) saying
/// why, before touching the socket: the caller still owns fd and can hand it to SocketTransport
/// (connect_memory() with TransportChoice::uring does exactly that).
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <vector>

#include "shmkit/transport/memory_transport.hpp"
#include "shmkit/transport/span_arena.hpp"
#include "shmkit/transport/uring_ring.hpp"
#include "shmkit/transport/wire.hpp"

namespace shmkit::transport {

struct UringTransportOptions {
  std::uint32_t max_message = wire::kDefaultMaxMessage;
  std::chrono::milliseconds io_timeout{5000};  // bound of the blocking read()/write()
  bool own_fd = true;                          // close the socket in the destructor
  unsigned ring_entries = 64;
  std::size_t arena_bytes = std::size_t{32} << 20;
  std::size_t chunk = std::size_t{512} << 10;  // bytes per wire request (<= 1 MiB): a 1 MiB read
                                               /// is 2 requests in flight (docs/PERFORMANCE_NOTES.md)
  unsigned max_chunks = 4096;                  // wire requests in flight at once
  bool fixed_buffers = true;                   // register the arena with the ring
  /// wait(): peek the completion queue (yielding the CPU to any other runnable task between
  /// peeks) this long before sleeping in io_uring_enter, as the Agent does before it blocks
  /// (AgentOptions::spin): a reply on its way then costs no wake-up. OFF by default: near idle it
  /// gains a little, but with the CPUs busy it is catastrophic (the spinner, having yielded, waits
  /// for the other task's time slice to end; a sleeper is woken ahead of it; figures in
  /// docs/PERFORMANCE_NOTES.md). 0: sleep at once.
  std::chrono::microseconds spin{0};
};

class UringTransport;

/// A future for one read or write. Reusable once waited for. Destroying one that is still in
/// flight abandons it (its buffer is never written afterwards).
class UringRequest {
 public:
  UringRequest() = default;
  ~UringRequest();
  UringRequest(const UringRequest&) = delete;
  UringRequest& operator=(const UringRequest&) = delete;

 private:
  friend class UringTransport;
  /// All guarded by owner_->mu_.
  UringTransport* owner_ = nullptr;  // non-null between submission and wait()/test() success
  std::uint32_t chunks_left_ = 0;    // INVARIANT1: = chunks in flight that name this request
  int result_ = 0;                   // the first error of any chunk, else 0
};

struct UringTransportStats {
  std::uint64_t requests = 0;       // wire requests (chunks) sent
  std::uint64_t sends = 0;          // SENDMSG operations (each may carry many frames)
  std::uint64_t receives = 0;       // receive operations completed
  std::uint64_t direct_bytes = 0;   // read bytes received straight into arena destinations
  std::uint64_t copied_bytes = 0;   // read bytes copied from the staging buffer
  std::uint64_t late_replies = 0;   // replies to abandoned requests, discarded
};

class UringTransport final : public MemoryTransport {
 public:
  /// Sets up the ring and arena, performs the handshake and fetches the window list (blocking,
  /// bounded by io_timeout). Throws shmkit::Error: unsupported (no io_uring: fd untouched and not
  /// closed), peer_closed, timed_out, protocol (not a memory agent).
  explicit UringTransport(int fd, const UringTransportOptions& opts = {});
  ~UringTransport() override;

  /// ---- asynchronous ----
  /// 0 when queued, or -errno: -EBUSY (req is still in flight), -ENOBUFS (arena or chunk slots
  /// exhausted: wait for something first), -EPIPE (the connection is broken).
  [[nodiscard]] int read_async(std::uint64_t remote, void* local, std::size_t len,
                               UringRequest& req) noexcept;
  [[nodiscard]] int write_async(std::uint64_t remote, const void* local, std::size_t len,
                                UringRequest& req) noexcept;
  /// Waits up to timeout_ms (< 0: forever) for req; its result: 0 or -errno (-EFAULT, -EACCES,
  /// -EPIPE, ... as in memory_transport.hpp; -ETIMEDOUT abandons it). -EINVAL when req was never
  /// submitted (or already waited for).
  [[nodiscard]] int wait(UringRequest& req, int timeout_ms = -1) noexcept;
  /// Non-blocking: makes progress; true with *result set when req is complete (then it is reusable).
  [[nodiscard]] bool test(UringRequest& req, int* result) noexcept;

  /// Memory for zero-copy reads: a span of this transport's (registered) arena. Exhaustion ->
  /// an empty span. Free it with release() once no request uses it.
  SpanArena::Span allocate(std::size_t n) noexcept;
  void release(const SpanArena::Span& s) noexcept;

  /// ---- blocking (MemoryTransport) ----
  [[nodiscard]] int read(std::uint64_t remote, void* local, std::size_t len) noexcept override;
  [[nodiscard]] int write(std::uint64_t remote, const void* local, std::size_t len) noexcept override;
  std::string_view kind() const noexcept override { return "uring"; }
  const std::vector<WindowDesc>& windows() const noexcept override { return windows_; }
  int remote_pid() const noexcept override { return peer_.pid; }

  const wire::Hello& peer_hello() const noexcept { return peer_; }
  std::uint32_t max_message() const noexcept { return max_message_; }
  std::size_t chunk_size() const noexcept { return chunk_; }
  bool broken() const noexcept;
  UringTransportStats stats() const noexcept;
  const UringRing& ring() const noexcept { return *ring_; }

 private:
  friend class UringRequest;
  struct Chunk {
    UringRequest* req = nullptr;  // null once abandoned (a late reply is then discarded)
    std::byte* dst = nullptr;     // read destination (reads only)
    std::uint64_t len = 0;        // data bytes asked for
    wire::MsgId id = 0;           // memproto::ids::read or ::write
    std::uint32_t gen = 1;        // tag = gen << 32 | index; gen >= 1 so no tag is 0
    std::uint32_t next = UINT32_MAX;
    bool in_use = false;
    bool arena_dst = false;       // a big read into arena memory: may be received in place
  };
  struct Frame {  // a request frame waiting to be (fully) sent
    SpanArena::Span span;
    std::uint32_t len;
  };

  void handshake();
  int submit_locked(wire::MsgId id, std::uint64_t remote, std::byte* buf, std::size_t len,
                    UringRequest& req) noexcept;
  int queue_chunk_locked(wire::MsgId id, std::uint64_t remote, std::byte* buf, std::size_t len,
                         UringRequest& req) noexcept;
  /// flush false: the SQE waits in the ring for the driver's next io_uring_enter (which also
  /// waits), so one system call carries it; used from completion handlers, which a driver runs.
  void start_send_locked(bool flush) noexcept;
  void start_recv_locked(bool flush) noexcept;
  void on_send_locked(int res) noexcept;
  void on_recv_locked(int res) noexcept;
  void parse_locked() noexcept;
  void complete_chunk_locked(std::uint32_t idx, int err) noexcept;
  void break_locked(int err) noexcept;
  void abandon_locked(std::unique_lock<std::mutex>& lk, UringRequest& req) noexcept;
  void abandon(UringRequest& req) noexcept;  // ~UringRequest of one still in flight
  /// One round of progress: waits up to timeout_ms for ring completions (as the driver, when no
  /// other thread drives) and handles them. Called with lk held; may drop it.
  void drive_locked(std::unique_lock<std::mutex>& lk, int timeout_ms) noexcept;
  void handle_locked(const UringCompletion& c) noexcept;
  int blocking(wire::MsgId id, std::uint64_t remote, std::byte* buf, std::size_t len) noexcept;

  int fd_;
  UringTransportOptions opts_;
  wire::Hello peer_;
  std::vector<WindowDesc> windows_;
  std::uint32_t max_message_ = 0;
  std::size_t chunk_ = 0;

  /// Construction order matters: the arena outlives the ring (the kernel may touch the arena
  /// until the ring is gone), and the mailbox dies before the ring.
  std::unique_ptr<SpanArena> arena_;
  std::unique_ptr<UringRing> ring_;
  std::unique_ptr<UringMailbox> io_mb_;  // the transport's own socket operations

  mutable std::mutex mu_;  // guards everything below, every UringRequest and the arena
  std::condition_variable cv_;
  bool driving_ = false;   // a thread is waiting on the ring for everyone
  int broken_ = 0;         // -errno once the stream broke

  std::vector<Chunk> chunks_;
  std::uint32_t free_chunk_ = UINT32_MAX;
  std::uint32_t live_chunks_ = 0;
  std::uint32_t arena_chunks_ = 0;   // INVARIANT3: = in-use chunks with arena_dst
  std::uint64_t min_pending_ = 0;    // INVARIANT4: = sum of min_reply() over in-use chunks: bytes
                                     /// the agent will certainly still send us

  std::deque<Frame> unsent_;         // frames in order; the first send_off_ bytes of the first
  std::size_t send_off_ = 0;         // one are already sent
  bool send_in_flight_ = false;
  SpanArena::Span send_iov_;         // iovec array + msghdr for SENDMSG (kernel-visible)

  SpanArena::Span staging_;          // receive buffer for replies
  std::size_t rbeg_ = 0, rend_ = 0;  // INVARIANT2: rbeg_ <= rend_ <= staging_.size; unparsed
                                     /// reply bytes are staging_[rbeg_, rend_)
  bool recv_in_flight_ = false;
  /// Direct receive of a big read reply's payload into its arena destination.
  /// INVARIANT9: a receive writes into a caller's buffer only while direct_chunk_ names an in-use
  /// chunk whose req is non-null; abandoning that req breaks the stream and waits for the
  /// receive to end (abandon_locked), and break_locked resets direct_chunk_.
  std::uint32_t direct_chunk_ = UINT32_MAX;
  std::uint64_t direct_done_ = 0;
  std::size_t need_ = 0;             // length of a reply frame only partly in staging_
  std::byte* recv_target_ = nullptr; // where the in-flight receive writes, and how much
  std::size_t recv_len_ = 0;
  std::vector<SpanArena::Span> deferred_release_;  // released while a receive targets them
  UringTransportStats stats_;
};

}  // namespace shmkit::transport
