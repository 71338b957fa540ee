// This process's state about the heaps it has attached: the registry of attached heaps, the
// per-thread table of cache slots that the hot paths read, each heap's ProcState, and the packed
// (tid or pid, start time) identities that cache slots and owner entries record. Private to
// heap/src; nothing here lives in shared memory.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "layout.hpp"
#include "shmkit/heap/heap.hpp"
#include "shmkit/sys/process.hpp"
#include "shmkit/sys/syscall.hpp"

namespace shmkit::heapimpl {

// The heaps attached in this process (Heap::attach/detach, the close hook; read lock-free by
// find_attached), guarded by g_registry_mutex for writers.
inline constexpr int kMaxAttached = 16;
inline std::mutex g_registry_mutex;
inline std::atomic<Heap*> g_heaps[kMaxAttached];
// Bumped on fork (child) and detach: thread-local cache entries of an older generation are stale.
inline std::atomic<std::uint64_t> g_generation{1};

struct TlsEntry {
  HeapControl* ctl;
  CacheSlot* slot;
  std::uint64_t gen;
};
// This thread's cache slots, most recently used first (the hot paths read t_cache[0] only).
// constinit: no initialisation wrapper. No tls_model("initial-exec"): one initial-exec variable makes
// a module's whole TLS block static, and a module loaded with dlopen() (the Python extension) then
// does not fit glibc's static TLS surplus (see tls_thread_state in lock.hpp); in a program linked
// with the static libraries the linker relaxes the access to one TLS-relative load anyway.
inline constexpr int kTlsEntries = 4;
inline constinit thread_local TlsEntry t_cache[kTlsEntries] = {};

// Per-process state of one attached heap (owner index, slots claimed by this process's threads).
struct ProcState {
  std::mutex mu;
  std::vector<CacheSlot*> slots;
  int owner_idx = -1;
  std::uint64_t owner_gen = 0;
};
inline std::unordered_map<const HeapControl*, std::unique_ptr<ProcState>>& proc_states() {
  static auto* m = new std::unordered_map<const HeapControl*, std::unique_ptr<ProcState>>();
  return *m;
}

inline std::uint64_t packed_identity(pid_t id) noexcept {
  std::uint64_t st = sys::process_start_time(id);
  return (static_cast<std::uint64_t>(static_cast<std::uint32_t>(id)) << 32) | (st & 0xffffffffULL);
}
inline bool packed_alive(std::uint64_t packed) noexcept {
  if (packed == 0) return false;
  auto id = static_cast<pid_t>(packed >> 32);
  std::uint64_t st = sys::process_start_time(id);
  return st != 0 && (st & 0xffffffffULL) == (packed & 0xffffffffULL);
}
inline thread_local std::uint64_t t_packed = 0;
inline thread_local std::uint64_t t_packed_gen = 0;
inline std::uint64_t my_thread_packed() noexcept {
  std::uint64_t g = g_generation.load(std::memory_order_relaxed);
  if (t_packed_gen != g || t_packed == 0) {
    t_packed = packed_identity(sys::gettid());
    t_packed_gen = g;
  }
  return t_packed;
}

inline std::uint64_t round_up(std::uint64_t v, std::uint64_t a) noexcept { return (v + a - 1) & ~(a - 1); }

}  // namespace shmkit::heapimpl
