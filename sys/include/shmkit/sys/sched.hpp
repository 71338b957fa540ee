/// Scheduler calls for bounded spin-waits (added for transport/): giving the CPU to any other
/// runnable task between polls, so that a spinning waiter costs nothing on a busy machine and
/// saves a sleep and wake-up on an idle one. Same convention as syscall.hpp: noexcept.
#pragma once

namespace shmkit::sys {

/// sched_yield(2): lets every other runnable task on this CPU go first. It cannot fail on Linux
/// (always 0); returned anyway, per the syscall layer's convention.
int yield_cpu() noexcept;

}  // namespace shmkit::sys
