/// The syscall layer: every mmap, file, futex, splice, process_vm and socket call that shmkit makes
/// goes through here, so that each is checked in one way and can be found in one place.
///
/// Convention (liburing's): each wrapper is noexcept and returns the kernel's result, or -errno on
/// failure; EINTR is retried where the call is restartable without side effects. Callers on set-up
/// paths turn a negative result into shmkit::Error with context (see check() below); hot paths
/// propagate the -errno value.
#pragma once

#include <sys/stat.h>
#include <sys/types.h>
#include <sys/uio.h>

#include <cstddef>
#include <cstdint>
#include <string>

namespace shmkit::sys {

/// -- memory mappings ---------------------------------------------------------------------------
/// On success *out is the mapping's address and 0 is returned.
[[nodiscard]] int mmap(void** out, void* addr, std::size_t len, int prot, int flags, int fd,
                       off_t offset) noexcept;
[[nodiscard]] int munmap(void* addr, std::size_t len) noexcept;
[[nodiscard]] int madvise(void* addr, std::size_t len, int advice) noexcept;

/// -- files ----------------------------------------------------------------------------------------
[[nodiscard]] int open(const char* path, int flags, mode_t mode = 0) noexcept;  // fd or -errno
[[nodiscard]] int shm_open(const char* name, int flags, mode_t mode) noexcept;  // fd or -errno
[[nodiscard]] int shm_unlink(const char* name) noexcept;
[[nodiscard]] int memfd_create(const char* name, unsigned flags) noexcept;
[[nodiscard]] int close(int fd) noexcept;
[[nodiscard]] int dup_cloexec(int fd) noexcept;  // a new descriptor of fd's open file (FD_CLOEXEC), or -errno  // never retried on EINTR (the fd is gone either way)
[[nodiscard]] int ftruncate(int fd, off_t len) noexcept;
/// Allocates backing store for [offset, offset+len) so later page faults cannot fail for lack of
/// space (a tmpfs page fault past the limit raises SIGBUS; this returns -ENOSPC instead).
[[nodiscard]] int fallocate(int fd, off_t offset, off_t len) noexcept;
[[nodiscard]] long file_size(int fd) noexcept;  // size or -errno
[[nodiscard]] int fstat(int fd, struct ::stat* st) noexcept;
[[nodiscard]] int fchmod(int fd, mode_t mode) noexcept;
[[nodiscard]] int flock(int fd, int op) noexcept;
[[nodiscard]] ssize_t pread(int fd, void* buf, std::size_t len, off_t offset) noexcept;
[[nodiscard]] ssize_t pwrite(int fd, const void* buf, std::size_t len, off_t offset) noexcept;
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
[[nodiscard]] ssize_t read(int fd, void* buf, std::size_t len) noexcept;
[[nodiscard]] ssize_t write(int fd, const void* buf, std::size_t len) noexcept;
[[nodiscard]] ssize_t readv(int fd, const iovec* iov, int iovcnt) noexcept;
[[nodiscard]] ssize_t writev(int fd, const iovec* iov, int iovcnt) noexcept;

/// -- pipes, splice, tee ---------------------------------------------------------------------------
[[nodiscard]] int pipe2(int fds[2], int flags) noexcept;
[[nodiscard]] ssize_t splice(int fd_in, loff_t* off_in, int fd_out, loff_t* off_out,
                             std::size_t len, unsigned flags) noexcept;
[[nodiscard]] ssize_t tee(int fd_in, int fd_out, std::size_t len, unsigned flags) noexcept;
/// poll() on one descriptor; returns revents, 0 on timeout, or -errno. timeout_ms < 0 waits forever.
[[nodiscard]] int poll_one(int fd, short events, int timeout_ms) noexcept;

/// -- other address spaces -----------------------------------------------------------------------
[[nodiscard]] ssize_t process_vm_readv(pid_t pid, const iovec* local, unsigned long nlocal,
                                       const iovec* remote, unsigned long nremote) noexcept;
[[nodiscard]] ssize_t process_vm_writev(pid_t pid, const iovec* local, unsigned long nlocal,
                                        const iovec* remote, unsigned long nremote) noexcept;

/// -- sockets -----------------------------------------------------------------------------------
[[nodiscard]] int socketpair(int domain, int type, int protocol, int sv[2]) noexcept;
/// Sends one byte plus `fd` as SCM_RIGHTS ancillary data; 0 or -errno.
[[nodiscard]] int send_fd(int sock, int fd) noexcept;
/// Receives a descriptor sent by send_fd; the fd (O_CLOEXEC) or -errno (-EPROTO when the message
/// carried no descriptor, -EPIPE when the peer closed).
[[nodiscard]] int recv_fd(int sock) noexcept;

/// -- threads and processes -------------------------------------------------------------------
pid_t gettid() noexcept;  // not cached: callers that cache must refresh after fork
[[nodiscard]] long set_robust_list(void* head, std::size_t len) noexcept;
[[nodiscard]] long get_robust_list(int pid, void** head, std::size_t* len) noexcept;

std::size_t page_size() noexcept;

/// Set-up helper: returns r when r >= 0, else throws shmkit::Error naming `what` and the errno.
long check(long r, const std::string& what);

}  // namespace shmkit::sys
