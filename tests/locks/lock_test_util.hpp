// Shared helpers for the locks tests: an object in a MAP_SHARED anonymous mapping (inherited by
// forked children), a monotonic clock readable in every process, and bounded polling.
#pragma once

#include <sys/mman.h>

#include <chrono>
#include <cstdint>
#include <new>
#include <stdexcept>
#include <thread>
#include <utility>

#include "shmkit/sys/syscall.hpp"

namespace shmkit::testing {

// One T constructed in place in its own MAP_SHARED|MAP_ANONYMOUS mapping; unmapped on destruction.
template <class T>
class Shared {
 public:
  template <class... A>
  explicit Shared(A&&... args) {
    void* p = nullptr;
    if (sys::mmap(&p, nullptr, sizeof(T), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0) < 0)
      throw std::runtime_error("mmap MAP_SHARED|MAP_ANONYMOUS failed");
    ptr_ = new (p) T(std::forward<A>(args)...);
  }
  ~Shared() {
    ptr_->~T();
    (void)sys::munmap(ptr_, sizeof(T));
  }
  Shared(const Shared&) = delete;
  Shared& operator=(const Shared&) = delete;
  T* operator->() const { return ptr_; }
  T& operator*() const { return *ptr_; }
  T* get() const { return ptr_; }

 private:
  T* ptr_ = nullptr;
};

// CLOCK_MONOTONIC in nanoseconds: the same clock in every process on the machine.
inline std::int64_t mono_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// Polls `pred` every 100 us until it holds or `timeout` passes; returns whether it held.
template <class Pred>
bool eventually(Pred pred, std::chrono::milliseconds timeout = std::chrono::seconds(5)) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!pred()) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::microseconds(100));
  }
  return true;
}

// Sleeps forever (bounded only by the test killing the process), for a child that must be killed
// while holding something.
[[noreturn]] inline void sleep_until_killed() {
  for (;;) std::this_thread::sleep_for(std::chrono::seconds(1));
}

}  // namespace shmkit::testing
