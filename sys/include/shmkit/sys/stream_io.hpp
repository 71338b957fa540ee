/// Syscall wrappers for stream transports (added for transport/, beside syscall.hpp): socket send
/// and receive with flags, descriptor flags, socket options, pipe sizes, poll over many
/// descriptors, credentials and ptrace-related process attributes.
///
/// Same convention as syscall.hpp: noexcept, the kernel's result or -errno, EINTR retried where
/// the call is restartable without side effects.
#pragma once

#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>

#include <cstddef>

namespace shmkit::sys {

/// send(2)/recv(2) with flags (callers pass MSG_NOSIGNAL on sends so a dead peer is -EPIPE, not
/// SIGPIPE). Bytes moved (possibly fewer than len), 0 on EOF for recv, or -errno.
[[nodiscard]] ssize_t send(int fd, const void* buf, std::size_t len, int flags) noexcept;
[[nodiscard]] ssize_t recv(int fd, void* buf, std::size_t len, int flags) noexcept;
/// sendmsg(2) of an iovec array (no ancillary data).
[[nodiscard]] ssize_t sendv(int fd, const iovec* iov, std::size_t iovcnt, int flags) noexcept;
/// recv(2) on a unix socket that also reports the pid the kernel recorded for the sender of the
/// bytes received (SCM_CREDENTIALS: the kernel fills in the real sender unless the sender had
/// CAP_SYS_ADMIN and named another). Needs SO_PASSCRED on `fd` before the peer sent them;
/// *sender is 0 when no credentials came (or the sender is outside this pid namespace).
[[nodiscard]] ssize_t recv_with_sender(int fd, void* buf, std::size_t len, int flags,
                                       pid_t* sender) noexcept;

/// O_NONBLOCK on or off; 0 or -errno.
[[nodiscard]] int set_nonblocking(int fd, bool on) noexcept;
/// FD_CLOEXEC on or off; 0 or -errno.
[[nodiscard]] int set_cloexec(int fd, bool on) noexcept;
/// A duplicate of fd (lowest free number); close-on-exec as asked. fd or -errno.
[[nodiscard]] int dup_fd(int fd, bool cloexec) noexcept;

/// F_SETPIPE_SZ / F_GETPIPE_SZ: the pipe's capacity in bytes, or -errno.
[[nodiscard]] int set_pipe_size(int pipe_fd, int bytes) noexcept;
[[nodiscard]] int pipe_size(int pipe_fd) noexcept;
/// FIONREAD: bytes waiting to be read (a pipe or a socket), or -errno.
[[nodiscard]] int bytes_readable(int fd) noexcept;

/// setsockopt/getsockopt of an int option; 0 / the value, or -errno.
[[nodiscard]] int setsockopt_int(int fd, int level, int opt, int value) noexcept;
[[nodiscard]] int getsockopt_int(int fd, int level, int opt) noexcept;
/// SO_RCVTIMEO / SO_SNDTIMEO (which = one of them) in milliseconds; 0 = wait forever.
[[nodiscard]] int set_socket_timeout(int fd, int which, int timeout_ms) noexcept;
/// SO_TYPE == SOCK_STREAM? 1 yes, 0 no (or not a socket: -ENOTSOCK).
[[nodiscard]] int is_stream_socket(int fd) noexcept;
[[nodiscard]] int shutdown(int fd, int how) noexcept;

/// poll(2) over many descriptors; the number ready, 0 on timeout, or -errno. EINTR is returned
/// as 0 (spurious wake-up: callers re-check their deadline and poll again).
[[nodiscard]] int poll(pollfd* fds, std::size_t n, int timeout_ms) noexcept;

/// Process attributes that decide whether process_vm_readv is allowed.
[[nodiscard]] int set_dumpable(bool on) noexcept;  // prctl(PR_SET_DUMPABLE)
[[nodiscard]] int setresuid(uid_t r, uid_t e, uid_t s) noexcept;
[[nodiscard]] int setresgid(gid_t r, gid_t e, gid_t s) noexcept;

/// Signal mask of the calling thread (pthread_sigmask), pending signals, and taking a pending
/// signal without waiting (sigtimedwait with a zero timeout: the signal number, or -EAGAIN).
[[nodiscard]] int thread_sigmask(int how, const sigset_t* set, sigset_t* old) noexcept;
[[nodiscard]] int sigpending(sigset_t* out) noexcept;
[[nodiscard]] int take_pending_signal(const sigset_t* set) noexcept;

/// memfd_secret(2): a memory file the kernel keeps out of its own direct map; it cannot be spliced
/// (splice says EINVAL), which is what the transport tests use it for. fd or -errno (-ENOSYS when
/// the kernel was booted without secretmem).
[[nodiscard]] int memfd_secret(unsigned flags) noexcept;

}  // namespace shmkit::sys
