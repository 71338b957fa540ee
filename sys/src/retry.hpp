// The syscall layer's one EINTR policy (private to sys/src): a restartable call is retried on
// EINTR; any other failure is returned as -errno.
#pragma once

#include <cerrno>

namespace shmkit::sys::detail {

template <class F>
auto retry(F f) noexcept -> decltype(f()) {
  for (;;) {
    auto r = f();
    if (r >= 0) return r;
    if (errno != EINTR) return -errno;
  }
}

}  // namespace shmkit::sys::detail
