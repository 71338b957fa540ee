/// SplicePipe: a pipe used as an in-kernel buffer to move bytes between two descriptors with
/// splice(2) (file -> socket, socket -> file, ...) and to duplicate a stream with tee(2), without
/// copying the bytes through user memory.
///
/// Every transfer is non-blocking (SPLICE_F_NONBLOCK) and waits for readiness in the order of the
/// Go zerocopy package's design, so a transfer never waits on one descriptor while it needs the
/// other:
///
///   round 1: transfer; on EAGAIN, if the source has not yet been seen ready, wait for the SOURCE
///            to be readable and transfer again; if it still says EAGAIN, go to round 2.
///   round 2: transfer; on EAGAIN, if the destination has not yet been seen ready, wait for the
///            DESTINATION to be writable and transfer again; if it still says EAGAIN, go back to
///            round 1 (forgetting what was seen).
///
/// Only one descriptor is ever waited on at a time, and each wait is for the readiness whose
/// absence the kernel just reported. (Waiting on the destination before the source has data, the
/// naive order, can park the caller on a descriptor unrelated to why it cannot progress.) Every
/// wait is bounded by the caller's deadline: an expired deadline is -ETIMEDOUT, a peer that hung
/// up is -EPIPE / 0 (EOF) from the next transfer, never a hang.
///
/// SIGPIPE: splice(2) into a socket whose peer is gone raises SIGPIPE (there is no MSG_NOSIGNAL
/// for splice). Code that splices into sockets holds a SigpipeBlock around it (the Agent does), or
/// runs with SIGPIPE ignored or blocked.
///
/// EINVAL from splice means "this pair of descriptors cannot splice" (a file system without
/// splice support, an O_APPEND destination, ...): callers fall back to plain copies. What
/// was already moved into the pipe stays there; drain_to_memory() hands it back to user memory.
#pragma once

#include <signal.h>
#include <sys/types.h>

#include <chrono>
#include <cstddef>
#include <span>

namespace shmkit::transport {

/// A point in time after which a transfer gives up with -ETIMEDOUT.
class Deadline {
 public:
  static Deadline after(std::chrono::milliseconds d) noexcept {
    return Deadline(std::chrono::steady_clock::now() + d);
  }
  static Deadline never() noexcept { return Deadline(std::chrono::steady_clock::time_point::max()); }
  /// Milliseconds left for poll(): -1 for never, 0 when expired.
  int poll_timeout_ms() const noexcept;
  bool expired() const noexcept { return std::chrono::steady_clock::now() >= at_; }

 private:
  explicit Deadline(std::chrono::steady_clock::time_point at) noexcept : at_(at) {}
  std::chrono::steady_clock::time_point at_;
};

/// Blocks SIGPIPE in the calling thread for its lifetime; a SIGPIPE raised meanwhile (by a splice
/// into a dead socket) is taken off the thread's pending set before the old mask is restored, so
/// it is never delivered. A SIGPIPE already pending before is left alone.
class SigpipeBlock {
 public:
  SigpipeBlock() noexcept;
  ~SigpipeBlock();
  SigpipeBlock(const SigpipeBlock&) = delete;
  SigpipeBlock& operator=(const SigpipeBlock&) = delete;

 private:
  sigset_t old_;
  bool was_pending_ = false;
  bool ok_ = false;
};

enum class TransferKind { splice, tee };

/// One transfer of at most len bytes from rfd (at *roff when non-null; advanced) to wfd (at *woff
/// when non-null; advanced), with the two-round order of waits above. Returns bytes moved (> 0),
/// 0 at end of stream, or -errno (-ETIMEDOUT when the deadline passed; -EINVAL: cannot splice).
/// `more` adds SPLICE_F_MORE (more data follows: lets a socket batch).
[[nodiscard]] ssize_t transfer_once(TransferKind kind, int rfd, loff_t* roff, int wfd, loff_t* woff,
                                    std::size_t len, bool more, Deadline deadline) noexcept;

class SplicePipe {
 public:
  /// A pipe of at least `capacity` bytes (F_SETPIPE_SZ; the kernel may round up, and an
  /// unprivileged process may get less than asked when over /proc/sys/fs/pipe-max-size: the
  /// capacity actually obtained is capacity()). Throws shmkit::Error when no pipe can be created.
  explicit SplicePipe(std::size_t capacity = std::size_t{1} << 20);
  SplicePipe(SplicePipe&& o) noexcept;
  SplicePipe& operator=(SplicePipe&& o) noexcept;
  SplicePipe(const SplicePipe&) = delete;
  SplicePipe& operator=(const SplicePipe&) = delete;
  ~SplicePipe();

  int read_end() const noexcept { return rfd_; }
  int write_end() const noexcept { return wfd_; }
  std::size_t capacity() const noexcept { return capacity_; }
  /// Bytes spliced in and not yet spliced or drained out. INVARIANT1: buffered() <= capacity().
  std::size_t buffered() const noexcept { return buffered_; }

  /// Moves exactly len bytes from `in` (at *in_off when non-null) to `out` (at *out_off when
  /// non-null) through the pipe, in rounds of at most capacity() (128 KiB first, doubling: `out`
  /// gets bytes while the rest is filled), preceded by `prefix` (at most
  /// capacity()/2 bytes, written into the pipe first: a frame header then reaches `out` in the same
  /// splice as the first data). Returns prefix.size() + len, or -errno: -EPIPE when `in` ended
  /// early, -ETIMEDOUT, -EINVAL when a side cannot splice, -EBUSY when buffered() != 0 on entry.
  /// On failure buffered() may be non-zero: bytes (prefix included) not delivered to `out`.
  [[nodiscard]] ssize_t move(int in, loff_t* in_off, int out, loff_t* out_off, std::size_t len,
                             Deadline deadline, std::span<const std::byte> prefix = {}) noexcept;
  /// Bytes delivered to `out` by the last move(), prefix included (also on failure).
  std::size_t moved() const noexcept { return moved_; }

  /// One splice into the pipe from `in` (at most min(len, free space)); bytes, 0 on EOF, -errno.
  [[nodiscard]] ssize_t fill(int in, loff_t* in_off, std::size_t len, Deadline deadline) noexcept;
  /// One splice out of the pipe to `out` (at most min(len, buffered())); bytes or -errno.
  [[nodiscard]] ssize_t drain(int out, loff_t* out_off, std::size_t len, bool more,
                              Deadline deadline) noexcept;
  /// Reads up to len buffered bytes into memory (the EINVAL fallback: bytes already taken from
  /// the source are not lost). Bytes read or -errno.
  [[nodiscard]] ssize_t drain_to_memory(void* dst, std::size_t len) noexcept;
  /// Drops whatever is buffered (after a failed transfer, before the pipe is reused). 0 or -errno.
  [[nodiscard]] int discard() noexcept;

  /// tee(2): copies up to len bytes buffered in this pipe into `other` (another pipe's write end)
  /// without consuming them here; bytes or -errno. Duplicate a stream by tee-ing to one consumer
  /// and then draining to the other.
  [[nodiscard]] ssize_t tee_to(int other_pipe_write_end, std::size_t len, Deadline deadline) noexcept;

 private:
  void close_fds() noexcept;
  int rfd_ = -1;
  int wfd_ = -1;
  std::size_t capacity_ = 0;
  std::size_t buffered_ = 0;
  std::size_t moved_ = 0;
};

}  // namespace shmkit::transport
