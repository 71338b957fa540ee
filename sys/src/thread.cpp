#include "shmkit/sys/thread.hpp"

#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>

namespace shmkit::sys {

pid_t gettid() noexcept { return static_cast<pid_t>(::syscall(SYS_gettid)); }
long get_robust_list(int pid, void** head, std::size_t* len) noexcept {
  long r = ::syscall(SYS_get_robust_list, pid, head, len);
  return r == 0 ? 0 : -errno;
}

int thread_exists(pid_t tid) noexcept {
  if (tid <= 0) return -EINVAL;
  // kill() accepts any thread id (it signals that thread's process); signal 0 only checks.
  if (::kill(tid, 0) == 0) return 1;
  if (errno == EPERM) return 1;
  if (errno == ESRCH) return 0;
  return -errno;
}

}  // namespace shmkit::sys
