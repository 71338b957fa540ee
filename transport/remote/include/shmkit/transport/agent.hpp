/// Agent: serves the memory windows its owner exported to clients connected over stream sockets,
/// speaking memory_protocol.hpp. Runs in the process that owns the memory, either on a thread of
/// its own (start()/stop()) or driven by the caller's loop (serve_once()).
///
/// Safety: a request is served only when its whole range lies inside ONE exported window with the
/// access it needs; everything else gets an error reply (EFAULT, EACCES). Nothing a peer sends
/// can make the agent touch memory it was not given: every size, count and address is checked
/// before use, frames longer than the negotiated maximum are refused before anything is allocated
/// for them, and control frames (everything but a Write's data) are read into a fixed buffer of
/// kMaxControlFrame bytes.
///
/// Several clients: one poll() over all client sockets; each client's requests are read with
/// non-blocking receives into that client's own state, so a slow or silent client never blocks the
/// others while its frame is incomplete. One receive takes everything waiting in the socket (up
/// to 64 KiB: 32 pipelined small reads are one system call), and small replies (up to 16 KiB:
/// errors, acknowledgements, copied reads) are gathered and sent together at the end of the
/// client's turn, or before any bigger reply so the stream order stays the request order. Once a request is complete it is served to the end (a
/// read reply is sent whole), bounded by io_timeout: a client that stops reading its reply or
/// stops sending its write data for io_timeout is dropped. A malformed frame gets an Error reply
/// (EPROTO / EBADMSG / EMSGSIZE) and that client alone is closed; the others keep being served.
///
/// Zero-copy: a window exported with a backing fd (the segment's fd or a memfd mapped MAP_SHARED
/// at `address`, starting at `file_offset`) is served with splice(2) through a pipe: read replies
/// file -> pipe -> socket, write data socket -> pipe -> file, non-blocking, with SplicePipe's order
/// of waits. When splice says EINVAL for a window (its file cannot splice) the agent falls back to
/// plain copies for that window from then on (stats().splice_fallbacks counts it); bytes already
/// in the pipe are not lost. AgentOptions::zero_copy = false turns splicing off altogether.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>

#include "shmkit/transport/wire.hpp"

namespace shmkit::transport {

struct ExportedWindow {
  const void* address = nullptr;  // in this process
  std::size_t length = 0;
  bool writable = false;           // false: reads only (writes get EACCES)
  int fd = -1;                     // optional backing file (not owned; must outlive the export)
  std::uint64_t file_offset = 0;   // where `address` is in that file
};

struct AgentOptions {
  std::uint32_t max_message = wire::kDefaultMaxMessage;
  bool zero_copy = true;                      // splice from/to window fds
  /// The splice pipe. 1 MiB (the default pipe-max-size) moves a 1 MiB reply in one fill and one
  /// or two drains; smaller pipes cost more rounds of system calls, bigger ones more CPU per MiB
  /// (docs/PERFORMANCE_NOTES.md).
  std::size_t pipe_capacity = std::size_t{1} << 20;
  std::chrono::milliseconds io_timeout{5000};  // bound on any wait inside one request
  int socket_buffer = 4 << 20;                // SO_SNDBUF/SO_RCVBUF for client sockets; 0: default
  /// run()/start(): after serving a request, keep polling (yielding the CPU to any other runnable
  /// task between polls) for this long before blocking in poll(), so that a client that reads a
  /// big range request by request, or sends its next batch right after the replies, finds the
  /// agent awake instead of paying a wake-up (longest on an idle machine's halted vCPU). Costs at
  /// most this much CPU per request when no next request comes; longer spins lose under load,
  /// when the spin takes CPU time the clients need (docs/PERFORMANCE_NOTES.md). 0: block at once.
  std::chrono::microseconds spin{50};
};

struct AgentStats {
  std::uint64_t requests = 0;          // frames served (replied to), errors included
  std::uint64_t error_replies = 0;
  std::uint64_t clients_added = 0;
  std::uint64_t clients_closed = 0;
  std::uint64_t malformed = 0;         // clients closed for a malformed frame
  std::uint64_t bytes_spliced = 0;
  std::uint64_t bytes_copied = 0;
  std::uint64_t splice_fallbacks = 0;  // windows switched to copies after EINVAL
};

class Agent {
 public:
  /// Frames other than a Write's data must fit this (a Hello with its feature list, requests).
  static constexpr std::uint32_t kMaxControlFrame = 64 * 1024;

  explicit Agent(const AgentOptions& opts = {});
  ~Agent();  // stops the thread if running, closes every client
  Agent(const Agent&) = delete;
  Agent& operator=(const Agent&) = delete;

  /// Exports a window (thread-safe; clients see it in later Windows replies). Throws
  /// Errc::invalid_argument for an empty, wrapping or overlapping window.
  void export_window(const ExportedWindow& w);
  /// Exports [base, base+size) of a shmkit::Segment (or anything with base()/size()/fd() of the
  /// same meaning), backed by its fd for zero-copy. A template so that this header does not pull
  /// in shm/segment.hpp. The window is the size at export time; export again after grow().
  template <class SegmentLike>
  void export_segment(const SegmentLike& seg, bool writable = true) {
    export_window({seg.base(), seg.size(), writable, seg.fd(), 0});
  }
  /// Removes the window starting at `address`; when this returns no request is touching it any
  /// more (the owner may unmap it). False when there was none.
  bool unexport_window(const void* address);

  /// Takes ownership of a connected stream socket (set non-blocking here). Thread-safe; wakes the
  /// serving thread. Throws Errc::invalid_argument when fd is not a stream socket.
  void add_client(int fd);

  /// Caller-driven: waits up to timeout_ms (-1 forever) for activity and serves it. Returns the
  /// number of clients still connected.
  std::size_t serve_once(int timeout_ms);
  /// Serves until stop() is called, or (when until_no_clients) until the last client has gone.
  void run(bool until_no_clients = false);

  /// A thread of its own running run(false). stop() returns once it has exited.
  void start();
  void stop();

  std::size_t client_count() const;
  AgentStats stats() const;
  const AgentOptions& options() const noexcept;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace shmkit::transport
