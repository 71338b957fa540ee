/// Threads: the calling thread's id, a thread's robust-futex list head, and whether a thread id
/// names a thread right now. Convention: memory.hpp's (noexcept, the kernel's result or -errno).
#pragma once

#include <sys/types.h>

#include <cstddef>

namespace shmkit::sys {

pid_t gettid() noexcept;  // not cached: callers that cache must refresh after fork
/// get_robust_list(2) of thread `pid` (0: the calling thread); 0 or -errno.
[[nodiscard]] long get_robust_list(int pid, void** head, std::size_t* len) noexcept;

/// Does a thread id name a live (or zombie) thread right now? Used by the locks module only to
/// recognise a lock word that names a thread which no longer exists AND was never cleaned up by
/// the kernel's robust-futex list (a forged word, or one left in a segment that outlived its
/// kernel). It is NOT an owner-death detector: a thread id is reused within seconds (pid_max
/// 32768), so "exists" proves nothing; only "does not exist" is conclusive.
/// 1 if a thread with this id exists in our pid namespace (kill(tid, 0) succeeds or says EPERM),
/// 0 if none does (ESRCH), -errno on any other failure (e.g. -EINVAL for tid <= 0).
[[nodiscard]] int thread_exists(pid_t tid) noexcept;

}  // namespace shmkit::sys
