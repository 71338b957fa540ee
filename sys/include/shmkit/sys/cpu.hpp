/// The CPU the calling thread runs on, for placement hints (spin only when the partner runs on
/// another CPU). glibc 2.35+ answers sched_getcpu() from the thread's rseq area (a load; measured
/// 5 ns per call on the reference machine, the vDSO getcpu where rseq is unavailable); the answer
/// may be stale by the time it is used, so it must only ever steer performance, never correctness.
#pragma once

#include <sched.h>

namespace shmkit::sys {

/// The calling thread's current CPU (0-based), or -1 when the kernel cannot tell.
inline int current_cpu() noexcept { return ::sched_getcpu(); }

}  // namespace shmkit::sys
