#include "shmkit/sys/pipe.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>

#include "retry.hpp"

namespace shmkit::sys {
using detail::retry;

int pipe2(int fds[2], int flags) noexcept { return ::pipe2(fds, flags | O_CLOEXEC) == 0 ? 0 : -errno; }
ssize_t splice(int fd_in, loff_t* off_in, int fd_out, loff_t* off_out, std::size_t len,
               unsigned flags) noexcept {
  return retry([&] { return ::splice(fd_in, off_in, fd_out, off_out, len, flags); });
}
ssize_t tee(int fd_in, int fd_out, std::size_t len, unsigned flags) noexcept {
  return retry([&] { return ::tee(fd_in, fd_out, len, flags); });
}

int set_pipe_size(int pipe_fd, int bytes) noexcept {
  int r = ::fcntl(pipe_fd, F_SETPIPE_SZ, bytes);
  return r >= 0 ? r : -errno;
}
int pipe_size(int pipe_fd) noexcept {
  int r = ::fcntl(pipe_fd, F_GETPIPE_SZ);
  return r >= 0 ? r : -errno;
}

}  // namespace shmkit::sys
