#include "test_syscalls.hpp"

#include <fcntl.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>

namespace shmkit::testing {

int set_dumpable(bool on) noexcept {
  return ::prctl(PR_SET_DUMPABLE, on ? 1 : 0, 0, 0, 0) == 0 ? 0 : -errno;
}
int setresuid(uid_t r, uid_t e, uid_t s) noexcept { return ::setresuid(r, e, s) == 0 ? 0 : -errno; }
int setresgid(gid_t r, gid_t e, gid_t s) noexcept { return ::setresgid(r, e, s) == 0 ? 0 : -errno; }

int memfd_secret(unsigned flags) noexcept {
#ifdef SYS_memfd_secret
  long r = ::syscall(SYS_memfd_secret, flags | O_CLOEXEC);
  return r >= 0 ? static_cast<int>(r) : -errno;
#else
  (void)flags;
  return -ENOSYS;
#endif
}

}  // namespace shmkit::testing
