/// The CPU, for bounded spin-waits and placement hints: which CPU the thread runs on, a spin-wait
/// hint to the CPU, and giving the CPU to other runnable tasks between polls.
#pragma once

#include <sched.h>

namespace shmkit::sys {

/// The calling thread's current CPU (0-based), or -1 when the kernel cannot tell. glibc 2.35+
/// answers sched_getcpu() from the thread's rseq area (a load; the vDSO getcpu where rseq is
/// unavailable). The answer may be stale by the time it is used, so it must only ever steer
/// performance, never correctness.
inline int current_cpu() noexcept { return ::sched_getcpu(); }

/// One spin-wait hint to the CPU (x86 PAUSE): lets the sibling hyperthread run and saves power
/// while a bounded spin polls a word another process will change.
inline void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield" ::: "memory");
#endif
}

/// sched_yield(2): lets every other runnable task on this CPU go first, so that a spinning waiter
/// costs nothing on a busy machine. It cannot fail on Linux (always 0); returned anyway, per the
/// syscall layer's convention.
int yield_cpu() noexcept;

}  // namespace shmkit::sys
