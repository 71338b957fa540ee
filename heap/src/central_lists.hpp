// The central lists, one per size class under its class lock: a cache bin's refill from list k
// (or, when it is empty, carved from the arena), its spill to list k, and a single chunk's push.
// Their format (a stack of batches) is at Engine::batch_meta.
// Part of the Engine (engine.hpp), included at the end of engine.hpp: include that, not this file.
#pragma once

#include "engine.hpp"

namespace shmkit::heapimpl {

// Moves up to batch chunks of class k to the (empty) bin of slot s. false when out of memory.
inline bool Engine::refill(CacheSlot* s, int k) noexcept {
  CacheBin& bin = s->bins[k];
  u64 cs = class_size(k);
  u64 want = batch_for(k);
  ClassCentral& cc = c.classes[k];
  if (!lock_class(k)) return false;
  u64 head = cc.head.load(std::memory_order_relaxed);
  u64 len = 0, nb = 0;
  if (head != 0) {
    // The central list is a stack of batches (see batch_meta): take the top batch whole.
    // The head is checked before its batch word is read through it.
    const bool head_ok = cached_ok(head, cs);
    u64 meta = head_ok ? batch_meta(head).load(std::memory_order_relaxed) : 0;
    len = meta >> kBatchLenShift;
    nb = meta & kBatchNextMask;
    // The next batch's head is only bounds-checked here (its header is a cache miss, and it
    // is only stored: every consumer of a central list checks a head before reading through it).
    if (!head_ok || len == 0 || (nb != 0 && !readable(nb))) {
      // A damaged central list: drop it (its chunks are lost; verify reports them as cached
      // chunks on no list) and carve from the arena below instead.
      c.errors.fetch_add(1, std::memory_order_relaxed);  // relaxed: a statistic
      Tx<kClassLogEntries> tx(*this, cc.log);
      tx.set(cc.head, 0);
      tx.set(cc.count, 0);
      tx.commit();
      head = 0;
    }
  }
  if (head != 0) {
    Tx<kClassLogEntries> tx(*this, cc.log);
    tx.set(bin.head, head);
    tx.set(bin.count, len);
    tx.set(cc.head, nb);
    u64 cnt = cc.count.load(std::memory_order_relaxed);
    tx.set(cc.count, cnt >= len ? cnt - len : 0);
    tx.commit();
    unlock(cc.lock);
    // Start the miss on the first chunk the caller pops.
    __builtin_prefetch(base + head + 8, 1);
    return true;
  }
  unlock(cc.lock);
  // Central list empty: carve from the arena straight into the bin.
  if (!lock_arena()) return false;
  if (arena_find(cs) == 0) scavenge_for(cs);
  // Carve little at a time (about 2 KiB): chunks carved ahead sit unused in this cache, and
  // the footprint of a growing heap should be its live bytes.
  want = std::clamp<u64>(2048 / cs, 1, want);
  Tx<kArenaLogEntries> tx(*this, c.arena_log);
  u64 ch = arena_find(cs);
  u64 m = 0;
  if (ch != 0) {
    u64 fs = word_size(word(ch).load(std::memory_order_relaxed));
    m = std::min(want, fs / cs);
    u64 rem = fs - m * cs;
    if (rem != 0 && rem < kMinChunk) {
      --m;
      rem += cs;
    }
    if (m == 0) {
      ch = 0;
    } else {
      bin_remove(tx, ch, fs);
      carve(tx, ch, m, cs, bin);
      if (rem != 0) {
        u64 r = ch + m * cs;
        tx.set(prev_free(r), not_free_tag(r));
        tx.set(word(r), make_word(r, rem, st_free));
        bin_insert(tx, r, rem);
      }
      tx.set(prev_free(ch + fs), boundary_tag(ch + fs, rem));
    }
  }
  if (ch == 0) {
    u64 t = checked_top();
    m = t == 0 ? 0 : want;
    while (m > 0 && !ensure_room(t + m * cs)) m /= 2;
    if (m == 0) {
      tx.commit();
      unlock(c.arena_lock);
      return false;
    }
    carve(tx, t, m, cs, bin);
    tx.set(c.top, t + m * cs);
    note_high_water(t + m * cs);
  }
  tx.commit();
  unlock(c.arena_lock);
  return true;
}

template <class TxT>
inline void Engine::carve(TxT& tx, u64 start, u64 m, u64 cs, CacheBin& bin) noexcept {
  for (u64 i = 0; i < m; ++i) {
    u64 o = start + i * cs;
    tx.set(prev_free(o), not_free_tag(o));
    tx.set(word(o), make_word(o, cs, st_cached));
    tx.set(next(o), i + 1 < m ? o + cs : 0);
  }
  tx.set(bin.head, start);
  tx.set(bin.count, m);
}

// Moves `count` chunks from the front of bin k of s to the central list (or, when that is
// long already, back to the arena).
inline void Engine::spill(CacheSlot* s, int k, u64 count) noexcept {
  CacheBin& bin = s->bins[k];
  ClassCentral& cc = c.classes[k];
  u64 cs = class_size(k);
  bool to_arena = cc.count.load(std::memory_order_relaxed) * cs > (u64{1} << 40);
  if (!to_arena) {
    if (!lock_class(k)) return;
    u64 head = bin.head.load(std::memory_order_relaxed);
    if (head == 0) {
      unlock(cc.lock);
      return;
    }
    if (!cached_ok(head, cs)) {
      // A damaged cache list: drop it (see allocate).
      c.errors.fetch_add(1, std::memory_order_relaxed);  // relaxed: a statistic
      Tx<kClassLogEntries> tx(*this, cc.log);
      tx.set(bin.head, 0);
      tx.set(bin.count, 0);
      tx.commit();
      unlock(cc.lock);
      return;
    }
    // The walk follows only links it can read through and stops before a damaged one, which
    // stays in the bin (the next pop drops it). The chunks' words are not read here (a cache
    // miss each): every consumer of a central list checks a chunk before using it.
    u64 last = head, got = 1;
    const u64 lim = limit();
    while (got < count) {
      u64 nx = next(last).load(std::memory_order_relaxed);
      if (nx == 0 || !readable(nx, lim)) break;
      last = nx;
      ++got;
    }
    Tx<kClassLogEntries> tx(*this, cc.log);
    u64 rest = next(last).load(std::memory_order_relaxed);
    tx.set(next(last), 0);
    tx.set(batch_meta(head), (got << kBatchLenShift) | cc.head.load(std::memory_order_relaxed));
    tx.set(cc.head, head);
    tx.set(cc.count, cc.count.load(std::memory_order_relaxed) + got);
    tx.set(bin.head, rest);
    u64 bc = bin.count.load(std::memory_order_relaxed);
    tx.set(bin.count, bc >= got ? bc - got : 0);
    tx.commit();
    unlock(cc.lock);
    return;
  }
  if (!lock_arena()) return;
  bin_to_arena(bin, cs, count);
  unlock(c.arena_lock);
}

// Pushes one cached-state chunk onto central list k. Class lock k held.
inline void Engine::push_central(int k, u64 ch, std::atomic<u64>* also_clear) noexcept {
  ClassCentral& cc = c.classes[k];
  Tx<kClassLogEntries> tx(*this, cc.log);
  tx.set(word(ch), make_word(ch, class_size(k), st_cached));
  tx.set(next(ch), 0);
  tx.set(batch_meta(ch), (u64{1} << kBatchLenShift) | cc.head.load(std::memory_order_relaxed));
  tx.set(cc.head, ch);
  tx.set(cc.count, cc.count.load(std::memory_order_relaxed) + 1);
  if (also_clear) tx.set(*also_clear, 0);
  tx.commit();
}

}  // namespace shmkit::heapimpl
