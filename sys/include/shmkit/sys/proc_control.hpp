/// Process control for code that forks and supervises children (the worker pool, channel and queue
/// tests, two-process benchmarks): fork, waitpid, kill, exec, the parent-death signal, getppid.
/// Each wrapper follows the syscall layer's convention: noexcept, the kernel's result or -errno,
/// EINTR retried where restartable.
#pragma once

#include <sys/types.h>

#include "shmkit/sys/cpu.hpp"  // cpu_relax, which callers of this header used to find here

namespace shmkit::sys {

/// fork(2): the child's pid in the parent, 0 in the child, or -errno. Flushes nothing: callers
/// that use stdio flush it first (a child would otherwise write the parent's buffered output again).
[[nodiscard]] pid_t fork() noexcept;
/// waitpid(2) with EINTR retried: the reaped pid, 0 (WNOHANG, still running) or -errno.
[[nodiscard]] pid_t waitpid(pid_t pid, int* status, int options) noexcept;
/// kill(2): 0 or -errno (-ESRCH when no such process).
[[nodiscard]] int kill(pid_t pid, int sig) noexcept;
/// Waits until child `pid` has exited but leaves it a zombie (waitid WEXITED|WNOWAIT), so its pid
/// cannot be reused until a later waitpid() reaps it. 0 or -errno; EINTR retried.
[[nodiscard]] int wait_exited_unreaped(pid_t pid) noexcept;
/// execv(2): returns only on failure, with -errno.
[[nodiscard]] int execv(const char* path, char* const argv[]) noexcept;
/// prctl(PR_SET_PDEATHSIG, sig): the calling process gets `sig` when its parent thread exits.
/// 0 or -errno. Callers must then check getppid() against the expected parent, because the parent
/// may already have died between fork() and this call (the signal is then never sent).
[[nodiscard]] int set_parent_death_signal(int sig) noexcept;
/// prctl(PR_SET_CHILD_SUBREAPER, on): orphaned descendants are re-parented to this process (so a
/// supervisor or test can reap grandchildren whose parent died). 0 or -errno.
[[nodiscard]] int set_child_subreaper(bool on) noexcept;
pid_t getppid() noexcept;
pid_t getpid() noexcept;
/// Leaves the process immediately without running atexit handlers or flushing stdio: what a forked
/// child must use so it does not run the parent's destructors (GoogleTest, benchmark state).
[[noreturn]] void exit_now(int code) noexcept;

}  // namespace shmkit::sys
