#include "shmkit/sys/syscall.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>

#include "retry.hpp"
#include <cstring>

#include "shmkit/sys/error.hpp"

namespace shmkit::sys {
using detail::retry;

int mmap(void** out, void* addr, std::size_t len, int prot, int flags, int fd, off_t offset) noexcept {
  void* p = ::mmap(addr, len, prot, flags, fd, offset);
  if (p == MAP_FAILED) return -errno;
  *out = p;
  return 0;
}
int munmap(void* addr, std::size_t len) noexcept { return ::munmap(addr, len) == 0 ? 0 : -errno; }
int madvise(void* addr, std::size_t len, int advice) noexcept {
  return ::madvise(addr, len, advice) == 0 ? 0 : -errno;
}

int open(const char* path, int flags, mode_t mode) noexcept {
  return retry([&] { return ::open(path, flags | O_CLOEXEC, mode); });
}
int shm_open(const char* name, int flags, mode_t mode) noexcept {
  return retry([&] { return ::shm_open(name, flags, mode); });
}
int shm_unlink(const char* name) noexcept { return ::shm_unlink(name) == 0 ? 0 : -errno; }
int memfd_create(const char* name, unsigned flags) noexcept {
  int fd = ::memfd_create(name, flags);
  return fd >= 0 ? fd : -errno;
}
int get_seals(int fd) noexcept {
  int r = ::fcntl(fd, F_GET_SEALS);
  return r >= 0 ? r : -errno;
}
int close(int fd) noexcept { return ::close(fd) == 0 ? 0 : -errno; }
int dup_cloexec(int fd) noexcept {
  int r = ::fcntl(fd, F_DUPFD_CLOEXEC, 0);
  return r >= 0 ? r : -errno;
}
int ftruncate(int fd, off_t len) noexcept { return retry([&] { return ::ftruncate(fd, len); }); }
int fallocate(int fd, off_t offset, off_t len) noexcept {
  // posix_fallocate returns the error number instead of setting errno.
  for (;;) {
    int r = ::posix_fallocate(fd, offset, len);
    if (r == 0) return 0;
    if (r != EINTR) return -r;
  }
}
long file_size(int fd) noexcept {
  struct stat st;
  if (::fstat(fd, &st) != 0) return -errno;
  return static_cast<long>(st.st_size);
}
int fstat(int fd, struct ::stat* st) noexcept { return ::fstat(fd, st) == 0 ? 0 : -errno; }
int fchmod(int fd, mode_t mode) noexcept { return retry([&] { return ::fchmod(fd, mode); }); }
int flock(int fd, int op) noexcept { return retry([&] { return ::flock(fd, op); }); }
ssize_t pread(int fd, void* buf, std::size_t len, off_t offset) noexcept {
  return retry([&] { return ::pread(fd, buf, len, offset); });
}
ssize_t pwrite(int fd, const void* buf, std::size_t len, off_t offset) noexcept {
  return retry([&] { return ::pwrite(fd, buf, len, offset); });
}
namespace {
struct ::flock ofd_range(short type, off_t start, off_t len) {
  struct ::flock fl {};
  fl.l_type = type;
  fl.l_whence = SEEK_SET;
  fl.l_start = start;
  fl.l_len = len;
  fl.l_pid = 0;  // required to be 0 for OFD locks
  return fl;
}
}  // namespace
int ofd_lock(int fd, short type, off_t start, off_t len) noexcept {
  struct ::flock fl = ofd_range(type, start, len);
  int r = retry([&] { return ::fcntl(fd, F_OFD_SETLK, &fl); });
  return r == -EACCES ? -EAGAIN : r;  // POSIX allows either for "held by another"
}
int ofd_lock_conflicts(int fd, short type, off_t start, off_t len) noexcept {
  struct ::flock fl = ofd_range(type, start, len);
  int r = retry([&] { return ::fcntl(fd, F_OFD_GETLK, &fl); });
  if (r < 0) return r;
  return fl.l_type == F_UNLCK ? 0 : 1;
}
int add_seals(int fd, int seals) noexcept { return retry([&] { return ::fcntl(fd, F_ADD_SEALS, seals); }); }
ssize_t read(int fd, void* buf, std::size_t len) noexcept {
  return retry([&] { return ::read(fd, buf, len); });
}
ssize_t write(int fd, const void* buf, std::size_t len) noexcept {
  return retry([&] { return ::write(fd, buf, len); });
}
ssize_t readv(int fd, const iovec* iov, int iovcnt) noexcept {
  return retry([&] { return ::readv(fd, iov, iovcnt); });
}
ssize_t writev(int fd, const iovec* iov, int iovcnt) noexcept {
  return retry([&] { return ::writev(fd, iov, iovcnt); });
}

int pipe2(int fds[2], int flags) noexcept { return ::pipe2(fds, flags | O_CLOEXEC) == 0 ? 0 : -errno; }
ssize_t splice(int fd_in, loff_t* off_in, int fd_out, loff_t* off_out, std::size_t len,
               unsigned flags) noexcept {
  return retry([&] { return ::splice(fd_in, off_in, fd_out, off_out, len, flags); });
}
ssize_t tee(int fd_in, int fd_out, std::size_t len, unsigned flags) noexcept {
  return retry([&] { return ::tee(fd_in, fd_out, len, flags); });
}
int poll_one(int fd, short events, int timeout_ms) noexcept {
  pollfd p{fd, events, 0};
  int r = retry([&] { return ::poll(&p, 1, timeout_ms); });
  if (r <= 0) return r;
  return p.revents;
}

ssize_t process_vm_readv(pid_t pid, const iovec* local, unsigned long nlocal, const iovec* remote,
                         unsigned long nremote) noexcept {
  return retry([&] { return ::process_vm_readv(pid, local, nlocal, remote, nremote, 0); });
}
ssize_t process_vm_writev(pid_t pid, const iovec* local, unsigned long nlocal, const iovec* remote,
                          unsigned long nremote) noexcept {
  return retry([&] { return ::process_vm_writev(pid, local, nlocal, remote, nremote, 0); });
}

int socketpair(int domain, int type, int protocol, int sv[2]) noexcept {
  return ::socketpair(domain, type | SOCK_CLOEXEC, protocol, sv) == 0 ? 0 : -errno;
}

int send_fd(int sock, int fd) noexcept {
  char byte = 'F';
  iovec iov{&byte, 1};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  cmsghdr* c = CMSG_FIRSTHDR(&msg);
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
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
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

pid_t gettid() noexcept { return static_cast<pid_t>(::syscall(SYS_gettid)); }
long set_robust_list(void* head, std::size_t len) noexcept {
  long r = ::syscall(SYS_set_robust_list, head, len);
  return r == 0 ? 0 : -errno;
}
long get_robust_list(int pid, void** head, std::size_t* len) noexcept {
  long r = ::syscall(SYS_get_robust_list, pid, head, len);
  return r == 0 ? 0 : -errno;
}

std::size_t page_size() noexcept {
  static const std::size_t ps = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
  return ps;
}

long check(long r, const std::string& what) {
  if (r < 0) throw_errno(what, static_cast<int>(-r));
  return r;
}

}  // namespace shmkit::sys
