/// Pipes and moving bytes through them without copying: pipe2, splice, tee, the pipe's capacity.
/// Convention: memory.hpp's (noexcept, the kernel's result or -errno, EINTR retried where
/// restartable).
#pragma once

#include <sys/types.h>

#include <cstddef>

namespace shmkit::sys {

[[nodiscard]] int pipe2(int fds[2], int flags) noexcept;  // always adds O_CLOEXEC
[[nodiscard]] ssize_t splice(int fd_in, loff_t* off_in, int fd_out, loff_t* off_out,
                             std::size_t len, unsigned flags) noexcept;
[[nodiscard]] ssize_t tee(int fd_in, int fd_out, std::size_t len, unsigned flags) noexcept;

/// F_SETPIPE_SZ / F_GETPIPE_SZ: the pipe's capacity in bytes, or -errno.
[[nodiscard]] int set_pipe_size(int pipe_fd, int bytes) noexcept;
[[nodiscard]] int pipe_size(int pipe_fd) noexcept;

}  // namespace shmkit::sys
