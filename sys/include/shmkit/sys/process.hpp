/// Process identity that survives pid reuse: a pid alone names a different process within seconds
/// on a machine that forks a lot (pid_max may be 32768), so shmkit records the pid together with
/// the process start time (field 22 of /proc/PID/stat, in clock ticks since boot). Two identities
/// are the same process iff both fields match.
#pragma once

#include <sys/types.h>

#include <cstdint>

namespace shmkit::sys {

struct ProcessIdentity {
  std::int32_t pid = 0;
  std::uint32_t reserved = 0;
  std::uint64_t start_time = 0;  // 0 = unknown / empty
  friend bool operator==(const ProcessIdentity&, const ProcessIdentity&) = default;
};
static_assert(sizeof(ProcessIdentity) == 16, "ProcessIdentity is stored in segments");

/// Start time of `pid` from /proc, or 0 when the process does not exist (or /proc is unreadable).
std::uint64_t process_start_time(pid_t pid) noexcept;

/// This process's identity. Recomputed after fork (the value is cached per pid).
ProcessIdentity this_process() noexcept;

enum class Liveness { alive, dead, unknown };
/// alive: a process with that pid exists and started at that time; dead: none does (the pid is
/// free or belongs to a process that started at another time); unknown: start_time is 0 and a
/// process with that pid exists (cannot tell a reused pid from the original).
Liveness liveness(const ProcessIdentity& id) noexcept;

}  // namespace shmkit::sys
