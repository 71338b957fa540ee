#include "shmkit/sys/signal.hpp"

#include <pthread.h>
#include <time.h>

#include <cerrno>

namespace shmkit::sys {

int thread_sigmask(int how, const sigset_t* set, sigset_t* old) noexcept {
  return -::pthread_sigmask(how, set, old);  // returns the error number itself
}
int sigpending(sigset_t* out) noexcept { return ::sigpending(out) == 0 ? 0 : -errno; }
int take_pending_signal(const sigset_t* set) noexcept {
  timespec zero{0, 0};
  int r = ::sigtimedwait(set, nullptr, &zero);
  return r >= 0 ? r : -errno;
}

}  // namespace shmkit::sys
