/// Sockets: socketpair, send and receive (with flags, gathered, and one descriptor as SCM_RIGHTS),
/// socket options and shutdown. Convention: memory.hpp's (noexcept, the kernel's result or -errno,
/// EINTR retried where restartable).
#pragma once

#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>

#include <cstddef>

namespace shmkit::sys {

[[nodiscard]] int socketpair(int domain, int type, int protocol, int sv[2]) noexcept;

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

/// Sends one byte plus `fd` as SCM_RIGHTS ancillary data; 0 or -errno.
[[nodiscard]] int send_fd(int sock, int fd) noexcept;
/// Receives a descriptor sent by send_fd; the fd (O_CLOEXEC) or -errno (-EPROTO when the message
/// carried no descriptor, -EPIPE when the peer closed).
[[nodiscard]] int recv_fd(int sock) noexcept;

/// setsockopt/getsockopt of an int option; 0 / the value, or -errno.
[[nodiscard]] int setsockopt_int(int fd, int level, int opt, int value) noexcept;
[[nodiscard]] int getsockopt_int(int fd, int level, int opt) noexcept;
/// SO_RCVTIMEO / SO_SNDTIMEO (which = one of them) in milliseconds; 0 = wait forever.
[[nodiscard]] int set_socket_timeout(int fd, int which, int timeout_ms) noexcept;
/// SO_TYPE == SOCK_STREAM? 1 yes, 0 no (or not a socket: -ENOTSOCK).
[[nodiscard]] int is_stream_socket(int fd) noexcept;
[[nodiscard]] int shutdown(int fd, int how) noexcept;

}  // namespace shmkit::sys
