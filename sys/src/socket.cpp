#include "shmkit/sys/socket.hpp"

#include <sys/time.h>

#include <cerrno>
#include <cstring>

#include "retry.hpp"
#include "shmkit/sys/debug_assert.hpp"

namespace shmkit::sys {
using detail::retry;

namespace {
// A message of one buffer with a control buffer for ancillary data (send_fd and recv_fd send one
// byte, since a stream socket cannot carry ancillary data alone).
msghdr message_with_control(iovec& data, char* control, std::size_t control_len) noexcept {
  msghdr msg{};
  msg.msg_iov = &data;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = control_len;
  return msg;
}
}  // namespace

int socketpair(int domain, int type, int protocol, int sv[2]) noexcept {
  return ::socketpair(domain, type | SOCK_CLOEXEC, protocol, sv) == 0 ? 0 : -errno;
}

ssize_t send(int fd, const void* buf, std::size_t len, int flags) noexcept {
  return retry([&] { return ::send(fd, buf, len, flags); });
}
ssize_t recv(int fd, void* buf, std::size_t len, int flags) noexcept {
  return retry([&] { return ::recv(fd, buf, len, flags); });
}
ssize_t sendv(int fd, const iovec* iov, std::size_t iovcnt, int flags) noexcept {
  msghdr msg{};
  msg.msg_iov = const_cast<iovec*>(iov);
  msg.msg_iovlen = iovcnt;
  return retry([&] { return ::sendmsg(fd, &msg, flags); });
}

ssize_t recv_with_sender(int fd, void* buf, std::size_t len, int flags, pid_t* sender) noexcept {
  *sender = 0;
  iovec iov{buf, len};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(ucred))] = {};
  msghdr msg = message_with_control(iov, control, sizeof control);
  ssize_t r = retry([&] { return ::recvmsg(fd, &msg, flags); });
  if (r <= 0) return r;
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_CREDENTIALS &&
        c->cmsg_len == CMSG_LEN(sizeof(ucred))) {
      ucred cred;
      std::memcpy(&cred, CMSG_DATA(c), sizeof cred);
      *sender = cred.pid;
    }
  }
  return r;
}

int send_fd(int sock, int fd) noexcept {
  char byte = 'F';
  iovec iov{&byte, 1};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
  msghdr msg = message_with_control(iov, control, sizeof control);
  cmsghdr* c = CMSG_FIRSTHDR(&msg);
  SHMKIT_ASSERT_INTERNAL(c != nullptr);  // control[] is CMSG_SPACE(sizeof(int)): room for one header
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(sizeof(int));
  std::memcpy(CMSG_DATA(c), &fd, sizeof fd);
  ssize_t r = retry([&] { return ::sendmsg(sock, &msg, MSG_NOSIGNAL); });
  return r < 0 ? static_cast<int>(r) : 0;
}

int recv_fd(int sock) noexcept {
  char byte = 0;
  iovec iov{&byte, 1};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
  msghdr msg = message_with_control(iov, control, sizeof control);
  ssize_t r = retry([&] { return ::recvmsg(sock, &msg, MSG_CMSG_CLOEXEC); });
  if (r < 0) return static_cast<int>(r);
  if (r == 0) return -EPIPE;
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS &&
        c->cmsg_len == CMSG_LEN(sizeof(int))) {
      int fd;
      std::memcpy(&fd, CMSG_DATA(c), sizeof fd);
      return fd;
    }
  }
  return -EPROTO;
}

int setsockopt_int(int fd, int level, int opt, int value) noexcept {
  return ::setsockopt(fd, level, opt, &value, sizeof value) == 0 ? 0 : -errno;
}
int getsockopt_int(int fd, int level, int opt) noexcept {
  int v = 0;
  socklen_t len = sizeof v;
  return ::getsockopt(fd, level, opt, &v, &len) == 0 ? v : -errno;
}
int set_socket_timeout(int fd, int which, int timeout_ms) noexcept {
  timeval tv{timeout_ms / 1000, static_cast<suseconds_t>(timeout_ms % 1000) * 1000};
  return ::setsockopt(fd, SOL_SOCKET, which, &tv, sizeof tv) == 0 ? 0 : -errno;
}
int is_stream_socket(int fd) noexcept {
  int t = getsockopt_int(fd, SOL_SOCKET, SO_TYPE);
  if (t < 0) return t;
  return t == SOCK_STREAM ? 1 : 0;
}
int shutdown(int fd, int how) noexcept { return ::shutdown(fd, how) == 0 ? 0 : -errno; }

}  // namespace shmkit::sys
