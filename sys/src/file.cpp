#include "shmkit/sys/file.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>

#include "retry.hpp"

namespace shmkit::sys {
using detail::retry;

int open(const char* path, int flags, mode_t mode) noexcept {
  return retry([&] { return ::open(path, flags | O_CLOEXEC, mode); });
}
int shm_open(const char* name, int flags, mode_t mode) noexcept {
  return retry([&] { return ::shm_open(name, flags, mode); });
}
int shm_unlink(const char* name) noexcept { return ::shm_unlink(name) == 0 ? 0 : -errno; }
int close(int fd) noexcept { return ::close(fd) == 0 ? 0 : -errno; }

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
int get_seals(int fd) noexcept { return retry([&] { return ::fcntl(fd, F_GET_SEALS); }); }

ssize_t pread(int fd, void* buf, std::size_t len, off_t offset) noexcept {
  return retry([&] { return ::pread(fd, buf, len, offset); });
}
ssize_t pwrite(int fd, const void* buf, std::size_t len, off_t offset) noexcept {
  return retry([&] { return ::pwrite(fd, buf, len, offset); });
}
ssize_t read(int fd, void* buf, std::size_t len) noexcept {
  return retry([&] { return ::read(fd, buf, len); });
}
ssize_t write(int fd, const void* buf, std::size_t len) noexcept {
  return retry([&] { return ::write(fd, buf, len); });
}

namespace {
// Sets or clears one bit of the flags fcntl reads with get_cmd and writes with set_cmd.
int set_fcntl_bit(int fd, int get_cmd, int set_cmd, int bit, bool on) noexcept {
  int fl = ::fcntl(fd, get_cmd);
  if (fl < 0) return -errno;
  int want = on ? (fl | bit) : (fl & ~bit);
  if (want != fl && ::fcntl(fd, set_cmd, want) != 0) return -errno;
  return 0;
}
}  // namespace

int set_nonblocking(int fd, bool on) noexcept { return set_fcntl_bit(fd, F_GETFL, F_SETFL, O_NONBLOCK, on); }
int set_cloexec(int fd, bool on) noexcept { return set_fcntl_bit(fd, F_GETFD, F_SETFD, FD_CLOEXEC, on); }
int dup_fd(int fd, bool cloexec) noexcept {
  int r = ::fcntl(fd, cloexec ? F_DUPFD_CLOEXEC : F_DUPFD, 0);
  return r >= 0 ? r : -errno;
}

int poll_one(int fd, short events, int timeout_ms) noexcept {
  pollfd p{fd, events, 0};
  int r = retry([&] { return ::poll(&p, 1, timeout_ms); });
  if (r <= 0) return r;
  return p.revents;
}
int poll(pollfd* fds, std::size_t n, int timeout_ms) noexcept {
  int r = ::poll(fds, n, timeout_ms);
  if (r >= 0) return r;
  return errno == EINTR ? 0 : -errno;
}

}  // namespace shmkit::sys
