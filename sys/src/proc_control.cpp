#include "shmkit/sys/proc_control.hpp"

#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>

namespace shmkit::sys {

pid_t fork() noexcept {
  pid_t r = ::fork();
  return r >= 0 ? r : -errno;
}

pid_t waitpid(pid_t pid, int* status, int options) noexcept {
  for (;;) {
    pid_t r = ::waitpid(pid, status, options);
    if (r >= 0) return r;
    if (errno != EINTR) return -errno;
  }
}

int kill(pid_t pid, int sig) noexcept { return ::kill(pid, sig) == 0 ? 0 : -errno; }

int wait_exited_unreaped(pid_t pid) noexcept {
  siginfo_t si{};
  for (;;) {
    if (::waitid(P_PID, static_cast<id_t>(pid), &si, WEXITED | WNOWAIT) == 0) return 0;
    if (errno != EINTR) return -errno;
  }
}

int execv(const char* path, char* const argv[]) noexcept {
  ::execv(path, argv);
  return -errno;
}

int set_parent_death_signal(int sig) noexcept {
  return ::prctl(PR_SET_PDEATHSIG, static_cast<unsigned long>(sig), 0UL, 0UL, 0UL) == 0 ? 0 : -errno;
}

int set_child_subreaper(bool on) noexcept {
  return ::prctl(PR_SET_CHILD_SUBREAPER, on ? 1UL : 0UL, 0UL, 0UL, 0UL) == 0 ? 0 : -errno;
}

pid_t getppid() noexcept { return ::getppid(); }
pid_t getpid() noexcept { return ::getpid(); }

void exit_now(int code) noexcept { ::_exit(code); }

}  // namespace shmkit::sys
