/// The syscall layer's io_uring part: every io_uring call that shmkit makes goes through here.
///
/// A thin, checked layer over liburing with the same convention as syscall.hpp: each wrapper is
/// noexcept and returns the kernel's result or -errno; restartable calls are retried on EINTR.
/// Callers on set-up paths turn a negative result into shmkit::Error (uring_setup_error() builds
/// one that says why io_uring is unavailable); hot paths propagate -errno.
///
/// Threading (what liburing allows and shmkit's ring relies on): the submission side (get_sqe,
/// submit) and the completion side (peek, advance, wait) of one ring may each be used by one thread
/// at a time, and the two sides by different threads at once.
#pragma once

#include <liburing.h>
#include <sys/uio.h>

#include <string>

namespace shmkit::sys {

/// io_uring_queue_init_params; 0 or -errno (-ENOSYS: kernel without io_uring; -EPERM: disabled by
/// the kernel.io_uring_disabled sysctl or filtered by seccomp; -ENOMEM: locked-memory limit).
[[nodiscard]] int uring_queue_init(unsigned entries, io_uring* ring, io_uring_params* params) noexcept;
void uring_queue_exit(io_uring* ring) noexcept;

/// Registers `n` buffers for READ_FIXED/WRITE_FIXED (buffer index = position in iov); 0 or -errno.
[[nodiscard]] int uring_register_buffers(io_uring* ring, const iovec* iov, unsigned n) noexcept;
[[nodiscard]] int uring_unregister_buffers(io_uring* ring) noexcept;

/// A free submission slot, or nullptr when the submission queue is full (never blocks).
[[nodiscard]] io_uring_sqe* uring_get_sqe(io_uring* ring) noexcept;
/// Hands every filled SQE to the kernel (io_uring_enter); the number submitted or -errno
/// (-EBUSY: the kernel wants completions reaped first). EINTR is retried.
[[nodiscard]] int uring_submit(io_uring* ring) noexcept;

/// Publishes the SQEs filled since the last flush to the kernel without entering it (what
/// io_uring_submit does before its io_uring_enter); returns how many the kernel has not consumed
/// yet. Call with the submission side held; the io_uring_enter that submits them may then be made
/// by any thread (uring_enter_wait), since the kernel reads only published, complete SQEs.
[[nodiscard]] unsigned uring_flush_sq(io_uring* ring) noexcept;
/// One io_uring_enter that submits up to `to_submit` published SQEs and waits for at least one
/// completion, up to timeout_ms (< 0: forever; >= 0 needs IORING_FEAT_EXT_ARG). Returns the number
/// submitted, -ETIME on timeout, 0 on EINTR, or -errno (-EBUSY: reap completions first).
[[nodiscard]] int uring_enter_wait(io_uring* ring, unsigned to_submit, int timeout_ms) noexcept;

/// Copies up to `n` completion pointers out without waiting (flushing the kernel's overflow list
/// when the CQ is empty but overflowed); returns the count. Release them with uring_cq_advance.
[[nodiscard]] unsigned uring_peek_batch(io_uring* ring, io_uring_cqe** out, unsigned n) noexcept;
void uring_cq_advance(io_uring* ring, unsigned n) noexcept;
/// Waits for at least one completion, up to timeout_ms (< 0: forever); 0, -ETIME on timeout, or
/// -errno. Does not consume it. EINTR is reported as 0 so callers re-check their state.
[[nodiscard]] int uring_wait_cqe(io_uring* ring, int timeout_ms) noexcept;
/// True when the kernel holds completions that did not fit in the CQ (IORING_SQ_CQ_OVERFLOW).
[[nodiscard]] bool uring_cq_overflowed(const io_uring* ring) noexcept;
/// Moves overflowed completions into the CQ (io_uring_enter with GETEVENTS); 0 or -errno.
[[nodiscard]] int uring_flush_overflow(io_uring* ring) noexcept;

/// 0 when an io_uring can be created in this process, else -errno (a tiny ring, set up and torn
/// down). Tests use it to skip themselves with uring_unavailable_reason().
[[nodiscard]] int uring_probe() noexcept;
/// A sentence a person can act on for a uring_queue_init failure (-errno).
std::string uring_unavailable_reason(int neg_errno);

}  // namespace shmkit::sys
