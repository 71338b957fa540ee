// The full allocate and free paths (the inline hot paths in heap.cpp handle the common case):
// pick this thread's cache, the central lists or the arena; check a user's pointer before
// freeing it; the owner index of owned blocks.
// Part of the Engine (engine.hpp), included at the end of engine.hpp: include that, not this file.
#pragma once

#include "engine.hpp"

namespace shmkit::heapimpl {

// ---- owner index for owned allocations ----
inline int Engine::my_owner_idx() noexcept {
  ProcState* ps = h.proc_;
  std::uint64_t g = g_generation.load(std::memory_order_relaxed);
  if (ps->owner_idx >= 0 && ps->owner_gen == g) return ps->owner_idx;
  std::lock_guard lk(ps->mu);
  if (ps->owner_idx >= 0 && ps->owner_gen == g) return ps->owner_idx;
  sys::ProcessIdentity me = sys::this_process();
  u64 packed = (static_cast<u64>(static_cast<u32>(me.pid)) << 32) | (me.start_time & 0xffffffffULL);
  for (int pass = 0; pass < 2; ++pass) {
    for (int i = 0; i < kOwners; ++i) {
      u64 cur = c.owners[i].owner.load(std::memory_order_relaxed);
      if (cur == packed) {
        ps->owner_idx = i;
        ps->owner_gen = g;
        return i;
      }
    }
    for (int i = 0; i < kOwners; ++i) {
      u64 expected = 0;
      // acq_rel: claims the entry; pairs with the release that freed it.
      if (c.owners[i].owner.compare_exchange_strong(expected, packed, std::memory_order_acq_rel)) {
        ps->owner_idx = i;
        ps->owner_gen = g;
        return i;
      }
    }
    h.reclaim_dead();
  }
  return -1;
}

inline u64 Engine::chunk_size_for(std::size_t n) noexcept {
  if (n > (u64{1} << 42)) return 0;
  return std::max<u64>(kMinChunk, round_up(n + kHeaderSize, 16));
}

inline void* Engine::allocate(std::size_t n, std::size_t align, bool owned) noexcept {
  u64 s = chunk_size_for(n);
  if (s == 0 || align == 0 || (align & (align - 1)) != 0) [[unlikely]] return nullptr;
  int owner = 0;
  if (owned) {
    owner = my_owner_idx();
    if (owner < 0) return nullptr;
  }
  u64 state = owned ? st_owned : st_used;
  if (align <= 16) {
    if (s <= kSmallMax) {
      CacheSlot* slot = my_slot();
      if (slot != nullptr) [[likely]] {
        int k = class_of_size(s);
        CacheBin& bin = slot->bins[k];
        for (int attempt = 0; attempt < 2; ++attempt) {
          u64 ch = bin.head.load(std::memory_order_relaxed);
          if (ch != 0) [[likely]] {
            // Hostile segments: the head (a link written into a chunk) is checked before the
            // chunk word is read through it, and the whole chunk (handed to the user) lies below top.
            // Compares only, no sum that could wrap; top was checked against the size at attach.
            const u64 top = limit();
            u64 w = ch % 16 == 0 && ch >= h.arena_begin_ && ch < top && top - ch >= s
                        ? word(ch).load(std::memory_order_relaxed)
                        : 0;
            if (w != make_word(ch, s, st_cached)) [[unlikely]] {
              // A corrupt cache list (a use-after-free wrote over a link): drop the list.
              c.errors.fetch_add(1, std::memory_order_relaxed);
              bin.head.store(0, std::memory_order_release);
              bin.count.store(0, std::memory_order_relaxed);
              continue;
            }
            cache_pop(base, *slot, bin, ch, make_word(ch, s, state, static_cast<u64>(owner)));
            return base + ch + kHeaderSize;
          }
          if (!refill(slot, k)) break;
        }
        // Out of memory for the cache: try once more after giving back dead processes' memory.
      }
    }
    return arena_allocate(s, state, static_cast<u64>(owner), 16);
  }
  if (align > sys::page_size() || (align & (align - 1)) != 0) return nullptr;
  return arena_allocate(s, state, static_cast<u64>(owner), align);
}

// Validates a user pointer; returns the chunk offset and its word, or a status.
inline HeapStatus Engine::check_block(const void* p, u64& ch, u64& w) const noexcept {
  if (p == nullptr) return HeapStatus::null_pointer;
  auto* b = static_cast<const std::byte*>(p);
  const u64 top = limit();
  // Above top only a tombstone can be found (a freed chunk that was merged into the space above
  // top); below the segment size the word can be read.
  if (b < base + h.arena_begin_ + kHeaderSize) return HeapStatus::foreign_pointer;
  if (b >= base + top) [[unlikely]] {
    u64 limit = std::min<u64>(seg_size(), c.high_water.load(std::memory_order_relaxed));
    if (b >= base + limit) return HeapStatus::foreign_pointer;
  }
  ch = static_cast<u64>(b - base) - kHeaderSize;
  if (ch % 16 != 0) return HeapStatus::foreign_pointer;
  w = word(ch).load(std::memory_order_acquire);
  if (!word_check_ok(ch, w)) return HeapStatus::foreign_pointer;
  u64 st = word_state(w);
  if (st == st_free || st == st_cached) return HeapStatus::double_free;
  u64 s = word_size(w);
  if (s < kMinChunk || s > top - ch) return HeapStatus::foreign_pointer;
  if (st != st_used && st != st_owned) return HeapStatus::foreign_pointer;
  // INVARIANT2: this offset's keyed tag, or a plausible size (it is followed only under the
  // arena lock, where it is stable: see deallocate).
  const u64 pf = prev_free(ch).load(std::memory_order_relaxed);
  if (pf != not_free_tag(ch) && (pf % 16 != 0 || pf < kMinChunk || pf > ch - h.arena_begin_))
    return HeapStatus::foreign_pointer;
  return HeapStatus::ok;
}

inline HeapStatus Engine::deallocate(void* p) noexcept {
  u64 ch = 0, w = 0;
  HeapStatus st = check_block(p, ch, w);
  if (st != HeapStatus::ok) [[unlikely]] {
    if (st != HeapStatus::null_pointer) c.errors.fetch_add(1, std::memory_order_relaxed);
    return st;
  }
  u64 s = word_size(w);
  // A chunk after an arena-free one goes back to the arena (where its tag is checked and the
  // two merge); only one whose tag says "not after a free chunk" is cached.
  if (s <= kSmallMax && prev_free(ch).load(std::memory_order_relaxed) == not_free_tag(ch)) {
    CacheSlot* slot = my_slot();
    if (slot != nullptr) [[likely]] {
      int k = class_of_size(s);
      CacheBin& bin = slot->bins[k];
      cache_push_begin(*slot, ch);  // the push (cache_protocol.hpp)
      u64 cached = make_word(ch, s, st_cached);
      if (word_state(w) == st_owned) {
        // An owned block can be freed at the same moment by reclaim_dead (its owner died): the
        // CAS decides who frees it. acq_rel: pairs with reclaim's CAS.
        if (!word(ch).compare_exchange_strong(w, cached, std::memory_order_acq_rel)) {
          cache_push_abandon(*slot);
          c.errors.fetch_add(1, std::memory_order_relaxed);
          return HeapStatus::double_free;
        }
      } else {
        word(ch).store(cached, std::memory_order_release);  // release: see cache_push_finish
      }
      const u64 cnt = cache_push_finish(base, *slot, bin, ch);
      u64 b = batch_for(k);
      if (cnt > 2 * b) [[unlikely]] spill(slot, k, b);
      return HeapStatus::ok;
    }
  }
  if (!lock_arena()) return HeapStatus::corrupt;
  // Re-check under the lock: another thread may have freed it meanwhile.
  u64 w2 = word(ch).load(std::memory_order_acquire);
  if (word_state(w2) != st_used && word_state(w2) != st_owned) {
    unlock(c.arena_lock);
    c.errors.fetch_add(1, std::memory_order_relaxed);
    return HeapStatus::double_free;
  }
  // INVARIANT2, exact under the lock: a tag that is not ch's keyed one names the arena-free
  // chunk before ch.
  const u64 pf = prev_free(ch).load(std::memory_order_relaxed);
  if (pf != not_free_tag(ch) && free_chunk_before(ch, pf) == 0) {
    unlock(c.arena_lock);
    c.errors.fetch_add(1, std::memory_order_relaxed);
    return HeapStatus::foreign_pointer;
  }
  Tx<kArenaLogEntries> tx(*this, c.arena_log, op_free, ch);
  arena_free(tx, ch);
  tx.commit();
  unlock(c.arena_lock);
  return HeapStatus::ok;
}

}  // namespace shmkit::heapimpl
