#include "shmkit/sys/thread_probe.hpp"

#include <signal.h>

#include <cerrno>

namespace shmkit::sys {

int thread_exists(pid_t tid) noexcept {
  if (tid <= 0) return -EINVAL;
  // kill() accepts any thread id (it signals that thread's process); signal 0 only checks.
  if (::kill(tid, 0) == 0) return 1;
  if (errno == EPERM) return 1;
  if (errno == ESRCH) return 0;
  return -errno;
}

}  // namespace shmkit::sys
