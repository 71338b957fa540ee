// This thread's cache slot: its lookup in the thread-local table, with no lock (the slot is
// written only by its owner thread, cache_protocol.hpp), and the batch size of a class.
// Claiming, releasing and reclaiming slots: heap.cpp (my_slot_slow, release_slot, reclaim_slot),
// kept in that translation unit: moved out, GCC inlines the engine's slow paths there differently.
// Part of the Engine (engine.hpp), included at the end of engine.hpp: include that, not this file.
#pragma once

#include "engine.hpp"

namespace shmkit::heapimpl {

constexpr u64 Engine::batch_for(int k) noexcept {
  return std::clamp<u64>(16384 / class_size(k), 8, 64);
}

inline CacheSlot* Engine::my_slot() noexcept {
  std::uint64_t g = g_generation.load(std::memory_order_relaxed);
  TlsEntry& e0 = t_cache[0];
  if (e0.ctl == h.ctl_ && e0.gen == g) [[likely]] return e0.slot;
  return my_slot_slow(g);
}

// This thread's slot when it has one already; never claims one (so callable under the arena
// lock, where my_slot_slow's reclaim_dead could not run).
inline CacheSlot* Engine::my_slot_if_any() const noexcept {
  const std::uint64_t g = g_generation.load(std::memory_order_relaxed);
  for (const TlsEntry& e : t_cache)
    if (e.ctl == h.ctl_ && e.gen == g) return e.slot;
  return nullptr;
}

}  // namespace shmkit::heapimpl
