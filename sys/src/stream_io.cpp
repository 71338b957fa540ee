#include "shmkit/sys/stream_io.hpp"

#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <unistd.h>

#include <pthread.h>
#include <time.h>

#include <cerrno>
#include <cstring>

#include "retry.hpp"

namespace shmkit::sys {
using detail::retry;

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
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
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

int set_nonblocking(int fd, bool on) noexcept {
  int fl = ::fcntl(fd, F_GETFL);
  if (fl < 0) return -errno;
  int want = on ? (fl | O_NONBLOCK) : (fl & ~O_NONBLOCK);
  if (want != fl && ::fcntl(fd, F_SETFL, want) != 0) return -errno;
  return 0;
}
int set_cloexec(int fd, bool on) noexcept {
  int fl = ::fcntl(fd, F_GETFD);
  if (fl < 0) return -errno;
  int want = on ? (fl | FD_CLOEXEC) : (fl & ~FD_CLOEXEC);
  if (want != fl && ::fcntl(fd, F_SETFD, want) != 0) return -errno;
  return 0;
}
int dup_fd(int fd, bool cloexec) noexcept {
  int r = ::fcntl(fd, cloexec ? F_DUPFD_CLOEXEC : F_DUPFD, 0);
  return r >= 0 ? r : -errno;
}

int set_pipe_size(int pipe_fd, int bytes) noexcept {
  int r = ::fcntl(pipe_fd, F_SETPIPE_SZ, bytes);
  return r >= 0 ? r : -errno;
}
int pipe_size(int pipe_fd) noexcept {
  int r = ::fcntl(pipe_fd, F_GETPIPE_SZ);
  return r >= 0 ? r : -errno;
}
int bytes_readable(int fd) noexcept {
  int n = 0;
  return ::ioctl(fd, FIONREAD, &n) == 0 ? n : -errno;
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

int poll(pollfd* fds, std::size_t n, int timeout_ms) noexcept {
  int r = ::poll(fds, n, timeout_ms);
  if (r >= 0) return r;
  return errno == EINTR ? 0 : -errno;
}

int set_dumpable(bool on) noexcept {
  return ::prctl(PR_SET_DUMPABLE, on ? 1 : 0, 0, 0, 0) == 0 ? 0 : -errno;
}
int setresuid(uid_t r, uid_t e, uid_t s) noexcept { return ::setresuid(r, e, s) == 0 ? 0 : -errno; }
int setresgid(gid_t r, gid_t e, gid_t s) noexcept { return ::setresgid(r, e, s) == 0 ? 0 : -errno; }

int thread_sigmask(int how, const sigset_t* set, sigset_t* old) noexcept {
  return -::pthread_sigmask(how, set, old);  // returns the error number itself
}
int sigpending(sigset_t* out) noexcept { return ::sigpending(out) == 0 ? 0 : -errno; }
int take_pending_signal(const sigset_t* set) noexcept {
  timespec zero{0, 0};
  int r = ::sigtimedwait(set, nullptr, &zero);
  return r >= 0 ? r : -errno;
}

int memfd_secret(unsigned flags) noexcept {
#ifdef SYS_memfd_secret
  long r = ::syscall(SYS_memfd_secret, flags | O_CLOEXEC);
  return r >= 0 ? static_cast<int>(r) : -errno;
#else
  (void)flags;
  return -ENOSYS;
#endif
}

}  // namespace shmkit::sys
