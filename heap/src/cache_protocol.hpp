// The small-block cache protocol: how a thread moves one chunk between its own cache bin and the
// user, without a lock and without an atomic read-modify-write. Written once here and called by
// the inline hot paths (Heap::allocate / Heap::deallocate) and by the engine's full paths.
//
// A thread's cache is written without a lock only by its owner thread. The one chunk in flight
// is recorded in CacheSlot::pending first, so that a reclaimer of a dead owner's slot can settle
// it (Engine::reclaim_slot):
//   pop  (allocate): pending = ch; head = next(ch); count - 1; word(ch) = the allocated word;
//                    pending = 0.
//   push (free):     pending = ch; word(ch) = the cached word (the caller's store, or its CAS
//                    against reclaim_dead for an owned block); next(ch) = head; head = ch;
//                    count + 1; pending = 0.
// INVARIANT10  while pending == ch: bin.head == ch <=> ch is on the bin's list (the push completed
//              or the pop had not begun); otherwise ch is off every list and owned by the thread.
#pragma once

#include <atomic>
#include <cstddef>

#include "layout.hpp"

namespace shmkit::heapimpl {

inline std::atomic<u64>& chunk_word_at(std::byte* base, u64 off) noexcept {
  return *reinterpret_cast<std::atomic<u64>*>(base + off);  // cast-align: off % 8 == 0 by construction
}

// Pops ch, the checked head of `bin` (its word says cached, of this class, at this offset), and
// gives it the word `allocated`.
inline void cache_pop(std::byte* base, CacheSlot& slot, CacheBin& bin, u64 ch, u64 allocated) noexcept {
  // relaxed: the release store of head below orders it first (INVARIANT10).
  slot.pending.store(ch, std::memory_order_relaxed);
  const u64 nx = chunk_word_at(base, ch + 16).load(std::memory_order_relaxed);
  // The next pop of this class reads nx's header and link: start the (likely) cache miss now
  // (two lines when the chunk starts 48 bytes into one).
  __builtin_prefetch(base + nx + 8, 1);
  __builtin_prefetch(base + nx + 16, 1);
  // release: pending is visible before ch leaves the list.
  bin.head.store(nx, std::memory_order_release);
  // relaxed: count is a hint only the owner reads exactly (a reclaimer walks the list).
  bin.count.store(bin.count.load(std::memory_order_relaxed) - 1, std::memory_order_relaxed);
  // release: the list no longer names ch before its word says allocated.
  chunk_word_at(base, ch + 8).store(allocated, std::memory_order_release);
  // release: the word is visible before the pop is declared finished.
  slot.pending.store(0, std::memory_order_release);
}

// The first step of a push: records ch as in flight. The caller then sets ch's word to the cached
// word (a release store, or a CAS) and calls cache_push_finish — or, when its CAS fails,
// cache_push_abandon.
inline void cache_push_begin(CacheSlot& slot, u64 ch) noexcept {
  // relaxed: the caller's release store (or acq_rel CAS) of the word orders it first.
  slot.pending.store(ch, std::memory_order_relaxed);
}
inline void cache_push_abandon(CacheSlot& slot) noexcept {
  slot.pending.store(0, std::memory_order_release);  // pairs with reclaim_slot's acquire
}
// Links ch (whose word says cached) at the head of `bin`; returns the bin's new length.
inline u64 cache_push_finish(std::byte* base, CacheSlot& slot, CacheBin& bin, u64 ch) noexcept {
  // relaxed: published by the release store of head.
  chunk_word_at(base, ch + 16).store(bin.head.load(std::memory_order_relaxed), std::memory_order_relaxed);
  // release: ch's word and link are visible before the list names it.
  bin.head.store(ch, std::memory_order_release);
  const u64 cnt = bin.count.load(std::memory_order_relaxed) + 1;
  bin.count.store(cnt, std::memory_order_relaxed);  // relaxed: see cache_pop
  // release: the push is complete before pending is cleared (INVARIANT10).
  slot.pending.store(0, std::memory_order_release);
  return cnt;
}

}  // namespace shmkit::heapimpl
