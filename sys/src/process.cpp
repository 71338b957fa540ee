#include "shmkit/sys/process.hpp"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "shmkit/sys/syscall.hpp"

namespace shmkit::sys {

std::uint64_t process_start_time(pid_t pid) noexcept {
  char path[64];
  std::snprintf(path, sizeof path, "/proc/%d/stat", static_cast<int>(pid));
  int fd = sys::open(path, O_RDONLY);
  if (fd < 0) return 0;
  char buf[1024];
  ssize_t n = sys::read(fd, buf, sizeof buf - 1);
  (void)sys::close(fd);
  if (n <= 0) return 0;
  buf[n] = '\0';
  // The command name (field 2) is in parentheses and may contain spaces or ')': skip to the last ')'.
  char* p = std::strrchr(buf, ')');
  if (p == nullptr) return 0;
  ++p;
  // p now points before field 3; field 22 is 19 fields later.
  for (int field = 3; field < 22; ++field) {
    p = std::strchr(p + 1, ' ');
    if (p == nullptr) return 0;
  }
  return std::strtoull(p + 1, nullptr, 10);
}

ProcessIdentity this_process() noexcept {
  // Cached per pid so that a forked child recomputes its own identity. Relaxed is enough: the
  // cache is per process, and a racing thread at worst recomputes the same value.
  static std::atomic<std::int32_t> cached_pid{0};
  static std::atomic<std::uint64_t> cached_start{0};
  std::int32_t pid = static_cast<std::int32_t>(::getpid());
  if (cached_pid.load(std::memory_order_relaxed) != pid) {
    cached_start.store(process_start_time(pid), std::memory_order_relaxed);
    cached_pid.store(pid, std::memory_order_relaxed);
  }
  return ProcessIdentity{pid, 0, cached_start.load(std::memory_order_relaxed)};
}

Liveness liveness(const ProcessIdentity& id) noexcept {
  if (id.pid <= 0) return Liveness::dead;
  std::uint64_t st = process_start_time(id.pid);
  if (st == 0) {
    // No /proc entry: either no such process, or /proc is not mounted. kill(0) tells which.
    if (::kill(id.pid, 0) == 0 || errno == EPERM) return id.start_time == 0 ? Liveness::unknown : Liveness::alive;
    return Liveness::dead;
  }
  if (id.start_time == 0) return Liveness::unknown;
  return st == id.start_time ? Liveness::alive : Liveness::dead;
}

}  // namespace shmkit::sys
