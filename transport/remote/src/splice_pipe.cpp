#include "shmkit/transport/splice_pipe.hpp"

#include <fcntl.h>
#include <poll.h>

#include <algorithm>
#include <cerrno>
#include <climits>

#include "shmkit/sys/error.hpp"
#include "shmkit/sys/stream_io.hpp"
#include "shmkit/sys/syscall.hpp"

namespace shmkit::transport {

int Deadline::poll_timeout_ms() const noexcept {
  if (at_ == std::chrono::steady_clock::time_point::max()) return -1;
  auto left = std::chrono::ceil<std::chrono::milliseconds>(at_ - std::chrono::steady_clock::now());
  if (left.count() <= 0) return 0;
  return left.count() > INT_MAX ? INT_MAX : static_cast<int>(left.count());
}

SigpipeBlock::SigpipeBlock() noexcept {
  sigset_t pipe_only;
  sigemptyset(&pipe_only);
  sigaddset(&pipe_only, SIGPIPE);
  sigset_t pending;
  if (sys::sigpending(&pending) == 0) was_pending_ = sigismember(&pending, SIGPIPE) == 1;
  ok_ = sys::thread_sigmask(SIG_BLOCK, &pipe_only, &old_) == 0;
}

SigpipeBlock::~SigpipeBlock() {
  if (!ok_) return;
  sigset_t pipe_only;
  sigemptyset(&pipe_only);
  sigaddset(&pipe_only, SIGPIPE);
  sigset_t pending;
  if (!was_pending_ && sys::sigpending(&pending) == 0 && sigismember(&pending, SIGPIPE) == 1)
    (void)sys::take_pending_signal(&pipe_only);
  (void)sys::thread_sigmask(SIG_SETMASK, &old_, nullptr);
}

namespace {

constexpr std::size_t kFirstFill = 128 * 1024;

ssize_t raw_transfer(TransferKind kind, int rfd, loff_t* roff, int wfd, loff_t* woff,
                     std::size_t len, unsigned flags) noexcept {
  return kind == TransferKind::splice ? sys::splice(rfd, roff, wfd, woff, len, flags)
                                      : sys::tee(rfd, wfd, len, flags);
}

// Waits for one descriptor; 0 when ready (or hung up / in error: the next transfer reports it),
// -ETIMEDOUT when the deadline passed, -errno from poll.
int wait_one(int fd, short events, Deadline deadline) noexcept {
  for (;;) {
    int t = deadline.poll_timeout_ms();
    if (t == 0 && deadline.expired()) return -ETIMEDOUT;
    int r = sys::poll_one(fd, events, t);
    if (r < 0) return r;
    if (r > 0) return 0;
    // r == 0: timeout (or a spurious wake-up): loop re-checks the deadline.
  }
}

}  // namespace

ssize_t transfer_once(TransferKind kind, int rfd, loff_t* roff, int wfd, loff_t* woff,
                      std::size_t len, bool more, Deadline deadline) noexcept {
  const unsigned flags = SPLICE_F_NONBLOCK | SPLICE_F_MOVE | (more ? SPLICE_F_MORE : 0u);
  // The two rounds of the order of waits (see splice_pipe.hpp). `round_one` true: the source is
  // the descriptor we wait on; false: the destination.
  bool round_one = true;
  bool seen_ready = false;
  for (;;) {
    ssize_t n = raw_transfer(kind, rfd, roff, wfd, woff, len, flags);
    if (n != -EAGAIN) return n;
    if (seen_ready) {
      // The side we waited for was ready and the transfer still could not progress: the other
      // side is the reason. Switch rounds (round 2 -> round 1 forgets what it saw, as in Go).
      round_one = !round_one;
      seen_ready = false;
    }
    int w = round_one ? wait_one(rfd, POLLIN, deadline) : wait_one(wfd, POLLOUT, deadline);
    if (w < 0) return w;
    seen_ready = true;
  }
}

SplicePipe::SplicePipe(std::size_t capacity) {
  int fds[2];
  sys::check(sys::pipe2(fds, O_NONBLOCK), "SplicePipe: pipe2 (too many open files?)");
  rfd_ = fds[0];
  wfd_ = fds[1];
  int want = static_cast<int>(std::min<std::size_t>(capacity, std::size_t{1} << 30));
  int got = sys::set_pipe_size(wfd_, want);
  if (got < 0) got = sys::pipe_size(wfd_);  // EPERM over pipe-max-size: keep the default
  if (got <= 0) {
    close_fds();
    throw Error(Errc::system, "SplicePipe: cannot read the pipe's capacity", -got);
  }
  capacity_ = static_cast<std::size_t>(got);
}

SplicePipe::SplicePipe(SplicePipe&& o) noexcept
    : rfd_(o.rfd_), wfd_(o.wfd_), capacity_(o.capacity_), buffered_(o.buffered_), moved_(o.moved_) {
  o.rfd_ = o.wfd_ = -1;
  o.buffered_ = 0;
}

SplicePipe& SplicePipe::operator=(SplicePipe&& o) noexcept {
  if (this != &o) {
    close_fds();
    rfd_ = o.rfd_;
    wfd_ = o.wfd_;
    capacity_ = o.capacity_;
    buffered_ = o.buffered_;
    moved_ = o.moved_;
    o.rfd_ = o.wfd_ = -1;
    o.buffered_ = 0;
  }
  return *this;
}

SplicePipe::~SplicePipe() { close_fds(); }

void SplicePipe::close_fds() noexcept {
  if (rfd_ >= 0) (void)sys::close(rfd_);
  if (wfd_ >= 0) (void)sys::close(wfd_);
  rfd_ = wfd_ = -1;
}

ssize_t SplicePipe::fill(int in, loff_t* in_off, std::size_t len, Deadline deadline) noexcept {
  std::size_t room = capacity_ - buffered_;
  if (room == 0) return -ENOBUFS;  // caller bug: drain first
  ssize_t n = transfer_once(TransferKind::splice, in, in_off, wfd_, nullptr, std::min(len, room),
                            false, deadline);
  if (n > 0) buffered_ += static_cast<std::size_t>(n);
  return n;
}

ssize_t SplicePipe::drain(int out, loff_t* out_off, std::size_t len, bool more,
                          Deadline deadline) noexcept {
  std::size_t want = std::min(len, buffered_);
  if (want == 0) return 0;
  ssize_t n = transfer_once(TransferKind::splice, rfd_, nullptr, out, out_off, want, more, deadline);
  if (n > 0) buffered_ -= static_cast<std::size_t>(n);
  return n == 0 ? -EPIPE : n;  // a pipe holding bytes cannot be at EOF: treat as a broken peer
}

ssize_t SplicePipe::move(int in, loff_t* in_off, int out, loff_t* out_off, std::size_t len,
                         Deadline deadline, std::span<const std::byte> prefix) noexcept {
  // Go zerocopy's transfer(): fill once (at most what is still owed, so nothing past len is taken
  // from `in`), then drain everything buffered, and repeat. Draining fully before filling again
  // keeps the pipe empty at each fill, so a fill never waits on a full pipe.
  moved_ = 0;
  if (buffered_ != 0) return -EBUSY;  // leftovers of another stream: discard() first
  if (prefix.size() > capacity_ / 2) return -EINVAL;
  if (!prefix.empty()) {
    // The prefix (a frame header) rides in front of the first spliced bytes, so `out` gets both
    // in one splice: a socket reader wakes once for header and data, not once for each.
    ssize_t w = sys::write(wfd_, prefix.data(), prefix.size());
    if (w < 0) return w;
    if (static_cast<std::size_t>(w) != prefix.size()) return -EIO;  // an empty pipe takes it whole
    buffered_ = prefix.size();
  }
  const std::size_t total = prefix.size() + len;
  std::size_t taken = 0;  // bytes taken from `in` so far
  // Rounds grow from 128 KiB, doubling: the reader on `out` starts on the first bytes after ~3 us
  // and copies each round while the next, twice as big, is filled (filling a 1 MiB pipe from a
  // file takes ~20 us, during which nothing could flow otherwise). The reader copies slower than
  // the pipe fills, so it never waits for a round after the first. A 1 MiB reply is 4 rounds
  // (128K, 256K, 512K, 128K) instead of 2 (the header takes a pipe slot of its own, so 1 MiB of
  // data never fit one round): measured 17% less real time per 1 MiB read near idle.
  std::size_t round = kFirstFill;
  while (moved_ < total) {
    if (taken < len && buffered_ < capacity_) {
      ssize_t n = fill(in, in_off, std::min(len - taken, round), deadline);
      round = round < capacity_ ? round * 2 : round;
      if (n < 0) return n;
      if (n == 0) return -EPIPE;  // the source ended before len bytes
      taken += static_cast<std::size_t>(n);
    }
    while (buffered_ > 0) {
      ssize_t m = drain(out, out_off, buffered_, taken < len, deadline);
      if (m < 0) return m;
      moved_ += static_cast<std::size_t>(m);
    }
  }
  return static_cast<ssize_t>(moved_);
}

ssize_t SplicePipe::drain_to_memory(void* dst, std::size_t len) noexcept {
  std::size_t want = std::min(len, buffered_);
  std::size_t done = 0;
  while (done < want) {
    ssize_t n = sys::read(rfd_, static_cast<char*>(dst) + done, want - done);
    if (n < 0) return done > 0 ? static_cast<ssize_t>(done) : n;
    if (n == 0) break;
    done += static_cast<std::size_t>(n);
    buffered_ -= static_cast<std::size_t>(n);
  }
  return static_cast<ssize_t>(done);
}

int SplicePipe::discard() noexcept {
  char sink[4096];
  while (buffered_ > 0) {
    ssize_t n = sys::read(rfd_, sink, std::min(sizeof sink, buffered_));
    if (n == -EAGAIN || n == 0) {  // the kernel holds fewer bytes than we counted: resync
      buffered_ = 0;
      break;
    }
    if (n < 0) return static_cast<int>(n);
    buffered_ -= static_cast<std::size_t>(n);
  }
  return 0;
}

ssize_t SplicePipe::tee_to(int other_pipe_write_end, std::size_t len, Deadline deadline) noexcept {
  std::size_t want = std::min(len, buffered_);
  if (want == 0) return 0;
  return transfer_once(TransferKind::tee, rfd_, nullptr, other_pipe_write_end, nullptr, want, false,
                       deadline);
}

}  // namespace shmkit::transport
