#include "shmkit/sys/uring.hpp"

#include <cerrno>
#include <cstring>

namespace shmkit::sys {

int uring_queue_init(unsigned entries, io_uring* ring, io_uring_params* params) noexcept {
  // liburing returns -errno itself; setup is not restartable work, so no retry.
  return io_uring_queue_init_params(entries, ring, params);
}

void uring_queue_exit(io_uring* ring) noexcept { io_uring_queue_exit(ring); }

int uring_register_buffers(io_uring* ring, const iovec* iov, unsigned n) noexcept {
  for (;;) {
    int r = io_uring_register_buffers(ring, iov, n);
    if (r != -EINTR) return r;
  }
}

int uring_unregister_buffers(io_uring* ring) noexcept {
  for (;;) {
    int r = io_uring_unregister_buffers(ring);
    if (r != -EINTR) return r;
  }
}

io_uring_sqe* uring_get_sqe(io_uring* ring) noexcept { return io_uring_get_sqe(ring); }

int uring_submit(io_uring* ring) noexcept {
  for (;;) {
    int r = io_uring_submit(ring);
    if (r != -EINTR) return r;
  }
}

unsigned uring_peek_batch(io_uring* ring, io_uring_cqe** out, unsigned n) noexcept {
  return io_uring_peek_batch_cqe(ring, out, n);
}

void uring_cq_advance(io_uring* ring, unsigned n) noexcept { io_uring_cq_advance(ring, n); }

int uring_wait_cqe(io_uring* ring, int timeout_ms) noexcept {
  io_uring_cqe* cqe = nullptr;
  int r;
  if (timeout_ms < 0) {
    r = io_uring_wait_cqe(ring, &cqe);
  } else {
    __kernel_timespec ts{};
    ts.tv_sec = timeout_ms / 1000;
    ts.tv_nsec = static_cast<long long>(timeout_ms % 1000) * 1000000;
    r = io_uring_wait_cqe_timeout(ring, &cqe, &ts);
  }
  if (r == -EINTR) return 0;
  return r < 0 ? r : 0;
}

bool uring_cq_overflowed(const io_uring* ring) noexcept { return io_uring_cq_has_overflow(ring); }

int uring_flush_overflow(io_uring* ring) noexcept {
  for (;;) {
    int r = io_uring_get_events(ring);
    if (r != -EINTR) return r < 0 ? r : 0;
  }
}

int uring_probe() noexcept {
  io_uring ring;
  io_uring_params p;
  std::memset(&p, 0, sizeof p);
  int r = io_uring_queue_init_params(2, &ring, &p);
  if (r < 0) return r;
  io_uring_queue_exit(&ring);
  return 0;
}

std::string uring_unavailable_reason(int neg_errno) {
  int e = -neg_errno;
  switch (e) {
    case ENOSYS:
      return "io_uring is not available: this kernel has no io_uring_setup (ENOSYS); "
             "use the socket transport";
    case EPERM:
      return "io_uring is not permitted: kernel.io_uring_disabled is set or a seccomp filter "
             "blocks io_uring_setup (EPERM); use the socket transport or allow io_uring";
    case EACCES:
      return "io_uring is not permitted for this user (EACCES: kernel.io_uring_group); "
             "use the socket transport";
    case ENOMEM:
      return "io_uring ring could not be allocated (ENOMEM): raise RLIMIT_MEMLOCK or use a "
             "smaller ring";
    default:
      return std::string("io_uring_setup failed: ") + std::strerror(e);
  }
}

}  // namespace shmkit::sys
