#include "shmkit/sys/cpu.hpp"

#include <cerrno>

namespace shmkit::sys {

int yield_cpu() noexcept { return ::sched_yield() == 0 ? 0 : -errno; }

}  // namespace shmkit::sys
