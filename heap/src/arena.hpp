// The arena, under the arena lock: the bins of arena-free chunks (INVARIANT4), finding and
// carving a chunk, freeing with coalescing (boundary tags INVARIANT2, INVARIANT3, tombstones
// INVARIANT7), growing the segment, and giving parked small chunks back (scavenge of the central
// lists, flush before a large block).
// Part of the Engine (engine.hpp), included at the end of engine.hpp: include that, not this file.
#pragma once

#include "engine.hpp"

namespace shmkit::heapimpl {

// A damaged bin list (a link or a head that fails the checks above) is dropped whole: its chunks
// are lost (verify reports them), the heap stays usable. Arena lock held; plain stores, as this
// is not part of any operation's undo: a death between them leaves a set bit over an empty list,
// which arena_find tolerates.
inline void Engine::drop_bin(int i) noexcept {
  c.errors.fetch_add(1, std::memory_order_relaxed);  // relaxed: a statistic
  c.bin_head[i].store(0, std::memory_order_release);
  c.bitmap[i / 64].fetch_and(~(u64{1} << (i % 64)), std::memory_order_release);
}

inline int Engine::bin_index(u64 s) noexcept {
  if (s < 4096) return static_cast<int>(s >> 4);
  int e = 63 - std::countl_zero(s);
  int sub = static_cast<int>((s >> (e - 3)) & 7);
  return std::min(kBins - 1, kExactBins + (e - 12) * 8 + sub);
}

template <class TxT>
inline void Engine::bin_insert(TxT& tx, u64 ch, u64 s) noexcept {
  int i = bin_index(s);
  u64 head = c.bin_head[i].load(std::memory_order_relaxed);
  if (head != 0 && !readable(head)) {
    drop_bin(i);
    head = 0;
  }
  tx.set(next(ch), head);
  tx.set(prev(ch), 0);
  if (head != 0) tx.set(prev(head), ch);
  tx.set(c.bin_head[i], ch);
  if (head == 0) {
    u64 b = c.bitmap[i / 64].load(std::memory_order_relaxed);
    tx.set(c.bitmap[i / 64], b | (u64{1} << (i % 64)));
  }
}

template <class TxT>
inline void Engine::bin_remove(TxT& tx, u64 ch, u64 s) noexcept {
  int i = bin_index(s);
  u64 n = next(ch).load(std::memory_order_relaxed);
  u64 p = prev(ch).load(std::memory_order_relaxed);
  // Both neighbours must link back to ch (the links are in the segment, so they are checked
  // before they are followed or written). Otherwise ch cannot be unlinked safely: the whole
  // list is dropped (ch is being taken off it anyway; the other chunks on it are lost until a
  // verify reports them) — a chunk still reachable from a list after it was handed out would
  // be handed out twice. This also covers ch being on no list (one drop_bin dropped earlier).
  const u64 lim = limit();
  const bool back_ok = p == 0 ? c.bin_head[i].load(std::memory_order_relaxed) == ch
                              : readable(p, lim) && next(p).load(std::memory_order_relaxed) == ch;
  const bool fwd_ok = n == 0 || (readable(n, lim) && prev(n).load(std::memory_order_relaxed) == ch);
  if (!back_ok || !fwd_ok) [[unlikely]] {
    drop_bin(i);
    return;
  }
  if (p != 0) tx.set(next(p), n);
  else tx.set(c.bin_head[i], n);
  if (n != 0) tx.set(prev(n), p);
  if (p == 0 && n == 0) {
    u64 b = c.bitmap[i / 64].load(std::memory_order_relaxed);
    tx.set(c.bitmap[i / 64], b & ~(u64{1} << (i % 64)));
  }
}

// Best fit among the first 64 chunks of a ranged bin (smallest size >= s, then lowest address):
// keeps large free chunks whole, which is what keeps the footprint near the live bytes.
// Stops at a chunk that is not a valid free chunk (a damaged link: bin_remove drops the list
// when a chunk next to the damage is taken).
inline u64 Engine::best_in_bin(u64 ch, u64 s, u64 lim) const noexcept {
  u64 best = 0, best_size = ~u64{0};
  for (int n = 0; ch != 0 && n < 64; ++n) {
    if (!valid_free(ch, 0, lim)) break;
    u64 cs = word_size(word(ch).load(std::memory_order_relaxed));
    if (cs >= s && (cs < best_size || (cs == best_size && ch < best))) {
      best = ch;
      best_size = cs;
    }
    ch = next(ch).load(std::memory_order_relaxed);
  }
  return best;
}

// A free chunk of size >= s, or 0. Exact bins hold one size; the first non-empty bin above the
// request's bin holds only larger chunks; within a ranged bin, first fit (bounded scan).
// Every chunk returned passes valid_free(ch, s): the callers use its size unchecked. A bin whose
// head fails the check is dropped (drop_bin) and the search goes on.
inline u64 Engine::arena_find(u64 s) noexcept {
  const u64 lim = limit();
  int i = bin_index(s);
  u64 ch = c.bin_head[i].load(std::memory_order_relaxed);
  if (ch != 0 && !valid_free(ch, 0, lim)) {
    drop_bin(i);
    ch = 0;
  }
  if (i < kExactBins) {
    if (ch != 0 && valid_free(ch, s, lim)) return ch;
  } else if (ch != 0) {
    u64 b = best_in_bin(ch, s, lim);
    if (b != 0) return b;
  }
  for (int j = i + 1; j < kBins;) {
    u64 b = c.bitmap[j / 64].load(std::memory_order_relaxed) >> (j % 64);
    if (b == 0) {
      j = (j / 64 + 1) * 64;
      continue;
    }
    j += std::countr_zero(b);
    if (j >= kBins) break;
    u64 head = c.bin_head[j].load(std::memory_order_relaxed);
    if (head == 0 || !valid_free(head, 0, lim)) {
      // A set bit over an empty list (a dropped list) or a damaged head: clear it, go on.
      drop_bin(j);
      ++j;
      continue;
    }
    u64 got = j < kExactBins ? (valid_free(head, s, lim) ? head : 0) : best_in_bin(head, s, lim);
    if (got != 0) return got;
    ++j;
  }
  return 0;
}

// Arena lock held, no transaction open. Before the arena extends top for `need` bytes, gives
// cached chunks of the central lists back to the arena (largest classes first, a batch at a
// time, coalescing) until a free chunk of `need` bytes exists: the central lists may hold many
// chunks after a burst of frees (fast to reuse for the same sizes), but they never make the
// heap touch new memory. Each chunk moves in one arena transaction that also pops it from the
// central list (whose class lock is held: try-locked, as the lock order is class -> arena).
// all: every central chunk goes back (flush_for_large), not only until `need` fits.
inline bool Engine::scavenge_for(u64 need, bool all) noexcept {
  for (int k = kClasses - 1; k >= 0; --k) {
    ClassCentral& cc = c.classes[k];
    if (cc.count.load(std::memory_order_relaxed) == 0) continue;
    if (!try_lock_class(k)) continue;
    const u64 cs = class_size(k);
    bool found = false;
    while (!found && cc.head.load(std::memory_order_relaxed) != 0) {
      const u64 h0 = cc.head.load(std::memory_order_relaxed);
      if (!cached_ok(h0, cs)) {
        c.errors.fetch_add(1, std::memory_order_relaxed);  // relaxed: a statistic
        unlock(cc.lock);
        return arena_find(need) != 0;
      }
      u64 stop = batch_meta(h0).load(std::memory_order_relaxed) & kBatchNextMask;
      for (u64 f = h0; f != 0 && f != stop; f = cc.head.load(std::memory_order_relaxed)) {
        if (!cached_ok(f, cs)) {
          c.errors.fetch_add(1, std::memory_order_relaxed);
          unlock(cc.lock);
          return arena_find(need) != 0;
        }
        u64 m = batch_meta(f).load(std::memory_order_relaxed);
        u64 len = m >> kBatchLenShift, nb = m & kBatchNextMask, nf = next(f).load(std::memory_order_relaxed);
        if (len > 1 && nf != 0 && !cached_ok(nf, cs)) {
          c.errors.fetch_add(1, std::memory_order_relaxed);
          unlock(cc.lock);
          return arena_find(need) != 0;
        }
        Tx<kArenaLogEntries> tx(*this, c.arena_log);
        if (len > 1 && nf != 0) {
          tx.set(batch_meta(nf), ((len - 1) << kBatchLenShift) | nb);
          tx.set(cc.head, nf);
        } else {
          tx.set(cc.head, nb);
        }
        u64 cnt = cc.count.load(std::memory_order_relaxed);
        tx.set(cc.count, cnt > 0 ? cnt - 1 : 0);
        arena_free(tx, f);
        tx.commit();
      }
      found = !all && arena_find(need) != 0;
    }
    unlock(cc.lock);
    if (found) return true;
  }
  return arena_find(need) != 0;
}


// Arena lock held, no transaction open; called before a large block (> kSmallMax) is taken
// from the arena. Small chunks parked on the central lists and in this thread's own cache are
// not coalesced: after a burst of frees they fence the free arena space between them into
// pieces that a large block does not fit, and the heap extends top instead (heap_fragmentation:
// footprint 1.051 x the live bytes with them left in place, 1.016 with this flush). When the
// central lists hold more than 1/kFlushFraction of the arena's span, all of it goes back to the
// arena now, while the neighbours freed in the same burst are still free to merge with. The
// small-block hot paths never come here, so a heap that reuses its small blocks keeps them.
inline void Engine::flush_for_large() noexcept {
  u64 parked = 0;
  for (int k = 0; k < kClasses; ++k)  // (a damaged count only makes the flush likelier)
    parked += std::min<u64>(c.classes[k].count.load(std::memory_order_relaxed), u64{1} << 32) * class_size(k);
  const u64 top = c.top.load(std::memory_order_relaxed);
  if (top < h.arena_begin_ || parked <= (top - h.arena_begin_) / kFlushFraction) return;
  if (CacheSlot* s = my_slot_if_any()) {
    for (int k = 0; k < kClasses; ++k) bin_to_arena(s->bins[k], class_size(k), ~u64{0});
  }
  (void)scavenge_for(~u64{0}, true);
}


// Arena lock held, by the owner of `bin`: moves up to `count` chunks from the front of the bin
// to the arena, one arena transaction each (which also logs the bin's head and count, so a
// death is rolled back by the arena's repairer before reclaim_slot reads the bin).
inline void Engine::bin_to_arena(CacheBin& bin, u64 cs, u64 count) noexcept {
  for (u64 i = 0; i < count; ++i) {
    u64 ch = bin.head.load(std::memory_order_relaxed);
    if (ch == 0) break;
    Tx<kArenaLogEntries> tx(*this, c.arena_log);
    if (!cached_ok(ch, cs)) {
      c.errors.fetch_add(1, std::memory_order_relaxed);  // relaxed: a statistic
      tx.set(bin.head, 0);
      tx.set(bin.count, 0);
      tx.commit();
      break;
    }
    tx.set(bin.head, next(ch).load(std::memory_order_relaxed));
    u64 bc = bin.count.load(std::memory_order_relaxed);
    tx.set(bin.count, bc > 0 ? bc - 1 : 0);
    arena_free(tx, ch);
    tx.commit();
  }
}

// Makes [top, top + s) available, growing the segment if needed. Arena lock held.
inline bool Engine::ensure_room(u64 end) noexcept {
  u64 size = seg_size();
  if (end <= size) return true;
  const u64 cap = h.capacity_;
  u64 want = std::max<u64>(end, size + std::max<u64>(size / 8, u64{1} << 20));
  want = std::min<u64>(round_up(want, sys::page_size()), cap);
  if (want >= end && Segment::try_grow_mapping(base, cap, h.fd_, want) == 0) return true;
  return Segment::try_grow_mapping(base, cap, h.fd_, end) == 0;
}

// Allocates an arena chunk of exactly s bytes (or, when the rest is too small to split, a bit
// more) in state `state`. Arena lock held; all writes through tx.
template <class TxT>
inline u64 Engine::arena_alloc(TxT& tx, u64 s, u64 state, u64 owner) noexcept {
  u64 ch = arena_find(s);
  if (ch != 0) {
    u64 cs = word_size(word(ch).load(std::memory_order_relaxed));
    bin_remove(tx, ch, cs);
    if (cs - s >= kMinChunk) {
      u64 r = ch + s;
      tx.set(word(ch), make_word(ch, s, state, owner));
      tx.set(prev_free(r), not_free_tag(r));
      tx.set(word(r), make_word(r, cs - s, st_free));
      bin_insert(tx, r, cs - s);
      tx.set(prev_free(ch + cs), cs - s);
    } else {
      tx.set(word(ch), make_word(ch, cs, state, owner));
      tx.set(prev_free(ch + cs), not_free_tag(ch + cs));
    }
    return ch;
  }
  u64 t = checked_top();
  if (t == 0 || !ensure_room(t + s)) return 0;
  tx.set(prev_free(t), not_free_tag(t));  // INVARIANT3: the chunk before top is never arena-free
  tx.set(word(t), make_word(t, s, state, owner));
  tx.set(c.top, t + s);
  return t;
}

// Frees an arena chunk (any non-free state), coalescing with free neighbours (INVARIANT3).
template <class TxT>
inline void Engine::arena_free(TxT& tx, u64 ch) noexcept {
  u64 s = word_size(word(ch).load(std::memory_order_relaxed));
  u64 start = ch, total = s;
  const u64 pf = prev_free(ch).load(std::memory_order_relaxed);
  if (const u64 p = free_chunk_before(ch, pf); p != 0) {
    {
      bin_remove(tx, p, pf);
      tx.set(word(ch), tombstone(ch));  // no live-looking header inside a free chunk
      start = p;
      total += pf;
    }
  }
  u64 n = ch + s;
  u64 top = c.top.load(std::memory_order_relaxed);
  if (n >= top) {
    tx.set(word(start), tombstone(start));
    if (start != ch) tx.set(word(ch), tombstone(ch));
    tx.set(c.top, start);
    return;
  }
  // The next chunk is merged only when it is a plausible free chunk (a damaged size is never
  // followed); the boundary tag at start + total is then below top.
  if (valid_free(n, 0, limit())) {
    u64 ns = word_size(word(n).load(std::memory_order_relaxed));
    bin_remove(tx, n, ns);
    tx.set(word(n), tombstone(n));
    total += ns;
  }
  tx.set(word(start), make_word(start, total, st_free));
  tx.set(prev_free(start + total), total);
  bin_insert(tx, start, total);
}

// Arena lock held: the arena-free chunk that ends at ch according to ch's boundary tag pf
// (INVARIANT2), or 0 when pf is 0 or does not describe one (a damaged or forged tag).
inline u64 Engine::free_chunk_before(u64 ch, u64 pf) const noexcept {
  if (pf == 0 || pf % 16 != 0 || pf < kMinChunk || pf > ch - h.arena_begin_) return 0;
  const u64 p = ch - pf;
  const u64 pw = word(p).load(std::memory_order_relaxed);
  return word_check_ok(p, pw) && word_state(pw) == st_free && word_size(pw) == pf ? p : 0;
}

// The header left where a freed chunk began when it was merged into a neighbour or into the
// space above top: size 0 (never a valid chunk), state free, this offset's check bits — so a
// second free of the same pointer is still recognised as a double free.
inline u64 Engine::tombstone(u64 off) const noexcept { return make_word(off, 0, st_free); }

inline void Engine::note_high_water(u64 t) noexcept {
  // relaxed: a statistic, written under the arena lock.
  if (t > c.high_water.load(std::memory_order_relaxed)) c.high_water.store(t, std::memory_order_relaxed);
}

inline void* Engine::arena_allocate(u64 s, u64 state, u64 owner, u64 align) noexcept {
  for (int pass = 0; pass < 2; ++pass) {
    if (!lock_arena()) return nullptr;
    const u64 need = align <= 16 ? s : s + align + kMinChunk;
    if (s > kSmallMax) flush_for_large();
    if (arena_find(need) == 0) scavenge_for(need);
    u64 ch;
    {
      Tx<kArenaLogEntries> tx(*this, c.arena_log);
      if (align <= 16) {
        ch = arena_alloc(tx, s, state, owner);
      } else {
        ch = arena_alloc(tx, s + align + kMinChunk, st_used, 0);
        if (ch != 0) ch = trim_aligned(tx, ch, s, align, state, owner);
      }
      tx.commit();
    }
    note_high_water(c.top.load(std::memory_order_relaxed));
    unlock(c.arena_lock);
    if (ch != 0) return base + ch + kHeaderSize;
    if (pass == 0 && h.reclaim_dead() == 0) break;
  }
  return nullptr;
}

template <class TxT>
inline u64 Engine::trim_aligned(TxT& tx, u64 ch, u64 s, u64 align, u64 state, u64 owner) noexcept {
  u64 total = word_size(word(ch).load(std::memory_order_relaxed));
  u64 user = ch + kHeaderSize;
  u64 want_user = round_up(reinterpret_cast<u64>(base) + user, align) - reinterpret_cast<u64>(base);
  while (want_user != user && want_user - user < kMinChunk) want_user += align;
  u64 nc = want_user - kHeaderSize;
  if (nc != ch) {
    u64 lead = nc - ch;
    tx.set(word(ch), make_word(ch, lead, st_used));
    tx.set(prev_free(nc), not_free_tag(nc));
    tx.set(word(nc), make_word(nc, total - lead, st_used));
    arena_free(tx, ch);  // sets prev_free(nc) when the lead chunk stays free
    total -= lead;
  }
  if (total - s >= kMinChunk) {
    u64 t = nc + s;
    tx.set(word(nc), make_word(nc, s, st_used));
    tx.set(prev_free(t), not_free_tag(t));
    tx.set(word(t), make_word(t, total - s, st_used));
    arena_free(tx, t);
    total = s;
  }
  tx.set(word(nc), make_word(nc, total, state, owner));
  return nc;
}

}  // namespace shmkit::heapimpl
