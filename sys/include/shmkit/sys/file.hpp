/// Files and descriptors: open (and shm_open), size, space, permissions, whole-file locks,
/// positioned and plain reads and writes, descriptor flags, and waiting for readiness (poll).
/// Convention: memory.hpp's (noexcept, the kernel's result or -errno, EINTR retried where
/// restartable).
#pragma once

#include <poll.h>
#include <sys/stat.h>
#include <sys/types.h>

#include <cstddef>

namespace shmkit::sys {

[[nodiscard]] int open(const char* path, int flags, mode_t mode = 0) noexcept;  // fd or -errno
[[nodiscard]] int shm_open(const char* name, int flags, mode_t mode) noexcept;  // fd or -errno
[[nodiscard]] int shm_unlink(const char* name) noexcept;
[[nodiscard]] int close(int fd) noexcept;  // never retried on EINTR (the fd is gone either way)

[[nodiscard]] int ftruncate(int fd, off_t len) noexcept;
/// Allocates backing store for [offset, offset+len) so later page faults cannot fail for lack of
/// space (a tmpfs page fault past the limit raises SIGBUS; this returns -ENOSPC instead).
[[nodiscard]] int fallocate(int fd, off_t offset, off_t len) noexcept;
[[nodiscard]] long file_size(int fd) noexcept;  // size or -errno
[[nodiscard]] int fstat(int fd, struct ::stat* st) noexcept;
[[nodiscard]] int fchmod(int fd, mode_t mode) noexcept;
[[nodiscard]] int flock(int fd, int op) noexcept;
/// Open-file-description record locks (F_OFD_SETLK / F_OFD_GETLK) on [start, start+len): owned by
/// the open file description, so shared by every process that inherited the descriptor and
/// released when the last descriptor for it closes (or its last holder dies).
/// ofd_lock: 0, or -EAGAIN when a conflicting lock is held. type: F_RDLCK, F_WRLCK or F_UNLCK.
[[nodiscard]] int ofd_lock(int fd, short type, off_t start, off_t len) noexcept;
/// 1 when another open file description holds a lock conflicting with `type` on the range,
/// 0 when none does, or -errno.
[[nodiscard]] int ofd_lock_conflicts(int fd, short type, off_t start, off_t len) noexcept;
/// fcntl(F_ADD_SEALS) on a memfd created with MFD_ALLOW_SEALING.
[[nodiscard]] int add_seals(int fd, int seals) noexcept;
[[nodiscard]] int get_seals(int fd) noexcept;  // fcntl F_GET_SEALS: the seals, or -errno

[[nodiscard]] ssize_t pread(int fd, void* buf, std::size_t len, off_t offset) noexcept;
[[nodiscard]] ssize_t pwrite(int fd, const void* buf, std::size_t len, off_t offset) noexcept;
[[nodiscard]] ssize_t read(int fd, void* buf, std::size_t len) noexcept;
[[nodiscard]] ssize_t write(int fd, const void* buf, std::size_t len) noexcept;

/// O_NONBLOCK on or off; 0 or -errno.
[[nodiscard]] int set_nonblocking(int fd, bool on) noexcept;
/// FD_CLOEXEC on or off; 0 or -errno.
[[nodiscard]] int set_cloexec(int fd, bool on) noexcept;
/// A duplicate of fd (lowest free number); close-on-exec as asked. fd or -errno.
[[nodiscard]] int dup_fd(int fd, bool cloexec) noexcept;

/// poll() on one descriptor; returns revents, 0 on timeout, or -errno. timeout_ms < 0 waits forever.
[[nodiscard]] int poll_one(int fd, short events, int timeout_ms) noexcept;
/// poll(2) over many descriptors; the number ready, 0 on timeout, or -errno. EINTR is returned
/// as 0 (spurious wake-up: callers re-check their deadline and poll again).
[[nodiscard]] int poll(pollfd* fds, std::size_t n, int timeout_ms) noexcept;

}  // namespace shmkit::sys
