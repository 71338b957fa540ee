// Helpers for benchmark families that run a partner process: a MAP_SHARED anonymous mapping both
// processes see (it is inherited across fork), forking the partner, and reaping it.
#pragma once

#include <sys/mman.h>
#include <sys/types.h>
#include <sys/wait.h>

#include <csignal>
#include <cstddef>

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

// Forks `body` as the partner (its return value is the exit code); returns its pid, or -errno.
template <class F>
pid_t fork_partner(F&& body) {
  pid_t pid = sys::fork();
  if (pid == 0) sys::exit_now(body());
  return pid;
}

// Reaps the partner; a run that failed kills it first (it may be blocked forever on its side).
inline bool reap_ok(pid_t pid, bool run_ok = true) {
  if (!run_ok) (void)sys::kill(pid, SIGKILL);
  int st = 0;
  return sys::waitpid(pid, &st, 0) == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0;
}

}  // namespace shmkit::bench
