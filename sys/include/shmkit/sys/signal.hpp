/// Signals of the calling thread: its mask, what is pending, and taking a pending signal without
/// waiting. Convention: memory.hpp's (noexcept, the kernel's result or -errno).
#pragma once

#include <signal.h>

namespace shmkit::sys {

/// pthread_sigmask(3); 0 or -errno.
[[nodiscard]] int thread_sigmask(int how, const sigset_t* set, sigset_t* old) noexcept;
[[nodiscard]] int sigpending(sigset_t* out) noexcept;
/// sigtimedwait with a zero timeout: the signal number, or -EAGAIN when none of `set` is pending.
[[nodiscard]] int take_pending_signal(const sigset_t* set) noexcept;

}  // namespace shmkit::sys
