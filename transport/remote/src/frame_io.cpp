#include "shmkit/transport/frame_io.hpp"

#include <poll.h>
#include <sys/socket.h>
#include <limits.h>

#include <algorithm>
#include <cerrno>

#include "shmkit/sys/sched.hpp"
#include "shmkit/sys/stream_io.hpp"
#include "shmkit/sys/syscall.hpp"

namespace shmkit::transport {
namespace {

int wait_for(int fd, short events, Deadline deadline) noexcept {
  for (;;) {
    if (deadline.expired()) return -ETIMEDOUT;
    int r = sys::poll_one(fd, events, deadline.poll_timeout_ms());
    if (r < 0) return r;
    if (r > 0) return 0;  // ready, hung up or in error: the next call says which
  }
}

}  // namespace

int send_all(int fd, iovec* iov, std::size_t n, Deadline deadline, int flags) noexcept {
  std::size_t i = 0;
  while (i < n && iov[i].iov_len == 0) ++i;
  while (i < n) {
    ssize_t r = sys::sendv(fd, iov + i, std::min<std::size_t>(n - i, IOV_MAX),
                           MSG_NOSIGNAL | MSG_DONTWAIT | flags);
    if (r == -EAGAIN) {
      if (int w = wait_for(fd, POLLOUT, deadline); w < 0) return w;
      continue;
    }
    if (r < 0) return static_cast<int>(r);
    // Partial sends are normal: advance through the iovecs by what the kernel took.
    auto left = static_cast<std::size_t>(r);
    while (i < n && left >= iov[i].iov_len) {
      left -= iov[i].iov_len;
      iov[i].iov_len = 0;
      ++i;
    }
    if (i < n) {
      iov[i].iov_base = static_cast<char*>(iov[i].iov_base) + left;
      iov[i].iov_len -= left;
    }
    while (i < n && iov[i].iov_len == 0) ++i;
  }
  return 0;
}

int send_all(int fd, const void* p, std::size_t len, Deadline deadline, int flags) noexcept {
  iovec iov{const_cast<void*>(p), len};
  return send_all(fd, &iov, 1, deadline, flags);
}

int recv_exact(int fd, void* p, std::size_t len, Deadline deadline) noexcept {
  auto* dst = static_cast<char*>(p);
  std::size_t got = 0;
  while (got < len) {
    // MSG_WAITALL lets a blocking socket fill the whole range in one call; on a non-blocking one
    // (or after SO_RCVTIMEO) we get what is there and poll for the rest.
    ssize_t r = sys::recv(fd, dst + got, len - got, MSG_WAITALL);
    if (r == -EAGAIN) {
      if (int w = wait_for(fd, POLLIN, deadline); w < 0) return w;
      continue;
    }
    if (r < 0) return static_cast<int>(r);
    if (r == 0) return -EPIPE;
    got += static_cast<std::size_t>(r);
  }
  return 0;
}

int recv_exact_spin(int fd, void* p, std::size_t len, Deadline deadline,
                    std::chrono::microseconds spin) noexcept {
  if (spin.count() <= 0) return recv_exact(fd, p, len, deadline);
  using clock = std::chrono::steady_clock;
  auto* dst = static_cast<char*>(p);
  std::size_t got = 0;
  auto last_progress = clock::now();
  while (got < len) {
    ssize_t r = sys::recv(fd, dst + got, len - got, MSG_DONTWAIT);
    if (r > 0) {
      got += static_cast<std::size_t>(r);
      last_progress = clock::now();
      continue;
    }
    if (r == 0) return -EPIPE;
    if (r != -EAGAIN) return static_cast<int>(r);
    if (clock::now() - last_progress >= spin) break;
    (void)sys::yield_cpu();  // any other runnable task goes first: the spin steals no CPU
  }
  return got == len ? 0 : recv_exact(fd, dst + got, len - got, deadline);
}

int recv_discard(int fd, std::uint64_t len, Deadline deadline) noexcept {
  char sink[16384];
  while (len > 0) {
    std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(len, sizeof sink));
    if (int r = recv_exact(fd, sink, n, deadline); r < 0) return r;
    len -= n;
  }
  return 0;
}

long recv_frame(int fd, wire::Header& h, std::span<std::byte> buf, std::uint32_t max_message,
                Deadline deadline) noexcept {
  if (int r = recv_exact(fd, &h, sizeof h, deadline); r < 0) return r;
  if (auto s = wire::check_header(h, max_message); s != wire::Status::ok) return -wire::to_errno(s);
  std::uint32_t n = wire::payload_size(h);
  if (n > buf.size()) return -ENOBUFS;
  if (int r = recv_exact(fd, buf.data(), n, deadline); r < 0) return r;
  return static_cast<long>(n);
}

}  // namespace shmkit::transport
