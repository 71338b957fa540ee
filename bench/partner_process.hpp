// Helpers for benchmark families that run a partner process: a MAP_SHARED anonymous mapping both
// processes see (it is inherited across fork), forking the partner, and reaping it. Register such
// a family with cpu_load.hpp's register_two_process (idle + loaded, cpu_ns_per_op); every partner
// must be reaped before the variant returns so its CPU time is counted.
#pragma once

#include <sys/mman.h>
#include <sys/types.h>
#include <sys/wait.h>

#include <chrono>
#include <csignal>
#include <cstddef>
#include <cstdio>
#include <thread>

#include "shmkit/sys/proc_control.hpp"
#include "shmkit/sys/syscall.hpp"

namespace shmkit::bench {

// n bytes of MAP_SHARED|MAP_ANONYMOUS memory; get() is nullptr when mmap failed.
class SharedMap {
 public:
  explicit SharedMap(std::size_t n) : n_(n) {
    if (sys::mmap(&p_, nullptr, n, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0) != 0) p_ = nullptr;
  }
  ~SharedMap() {
    if (p_ != nullptr) (void)sys::munmap(p_, n_);
  }
  SharedMap(const SharedMap&) = delete;
  SharedMap& operator=(const SharedMap&) = delete;
  std::byte* get() const { return static_cast<std::byte*>(p_); }

 private:
  void* p_ = nullptr;
  std::size_t n_;
};

// Forks `body` as the partner (its return value is the exit code, 99 when it throws); returns its
// pid, or -errno. stdio is flushed first so the partner never writes the parent's buffered output.
template <class F>
pid_t fork_partner(F&& body) {
  std::fflush(nullptr);
  pid_t pid = sys::fork();
  if (pid == 0) {
    int code = 99;
    try {
      code = body();
    } catch (...) {
    }
    sys::exit_now(code);
  }
  return pid;
}

// Writes or reads exactly n bytes on a blocking descriptor; false on an error or end of file.
inline bool full_io(int fd, void* buf, std::size_t n, bool write) {
  auto* p = static_cast<std::byte*>(buf);
  while (n > 0) {
    ssize_t r = write ? sys::write(fd, p, n) : sys::read(fd, p, n);
    if (r <= 0) return false;
    p += r;
    n -= static_cast<std::size_t>(r);
  }
  return true;
}

// Reaps the partner; a run that failed kills it first (it may be blocked forever on its side).
inline bool reap_ok(pid_t pid, bool run_ok = true) {
  if (!run_ok) (void)sys::kill(pid, SIGKILL);
  int st = 0;
  return sys::waitpid(pid, &st, 0) == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0;
}

// Reaps a partner that is expected to exit on its own (its peer closed its end); SIGKILLs it if it
// has not within `grace`. True when it exited with code 0 by itself.
inline bool reap_within(pid_t pid, std::chrono::milliseconds grace) {
  int st = 0;
  const auto end = std::chrono::steady_clock::now() + grace;
  for (;;) {
    pid_t r = sys::waitpid(pid, &st, WNOHANG);
    if (r == pid) return WIFEXITED(st) && WEXITSTATUS(st) == 0;
    if (r < 0) return false;
    if (std::chrono::steady_clock::now() >= end) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  (void)sys::kill(pid, SIGKILL);
  (void)sys::waitpid(pid, &st, 0);
  return false;
}

}  // namespace shmkit::bench
