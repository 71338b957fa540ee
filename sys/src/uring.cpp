#include "shmkit/sys/uring.hpp"

#include <cerrno>
#include <cstdint>
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

unsigned uring_flush_sq(io_uring* ring) noexcept {
  io_uring_sq* sq = &ring->sq;
  const unsigned tail = sq->sqe_tail;
  if (sq->sqe_head != tail) {
    sq->sqe_head = tail;
    // Release: the SQE contents written before are visible to the kernel once it sees the tail.
    io_uring_smp_store_release(sq->ktail, tail);
  }
  return tail - io_uring_smp_load_acquire(sq->khead);
}

int uring_enter_wait(io_uring* ring, unsigned to_submit, int timeout_ms) noexcept {
  unsigned flags = IORING_ENTER_GETEVENTS;
  int r;
  if (timeout_ms < 0) {
    r = io_uring_enter(static_cast<unsigned>(ring->ring_fd), to_submit, 1, flags, nullptr);
  } else {
    __kernel_timespec ts{};
    ts.tv_sec = timeout_ms / 1000;
    ts.tv_nsec = static_cast<long long>(timeout_ms % 1000) * 1000000;
    io_uring_getevents_arg arg{};
    arg.ts = reinterpret_cast<std::uint64_t>(&ts);
    flags |= IORING_ENTER_EXT_ARG;
    r = io_uring_enter2(static_cast<unsigned>(ring->ring_fd), to_submit, 1, flags,
                        reinterpret_cast<sigset_t*>(&arg), sizeof arg);
  }
  // liburing's io_uring_enter/io_uring_enter2 return the kernel's result: -errno on failure.
  return r == -EINTR ? 0 : r;
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
