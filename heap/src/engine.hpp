// The heap engine: every operation on the shared structures, with the checks that keep a damaged
// segment from steering it (heap/src; shared layout and invariants: layout.hpp; overview:
// heap.hpp). One Engine is a short-lived view of one attached Heap.
//
// Crash-safety discipline (what makes a SIGKILL at any instruction repairable):
//  1. Every word written under a heap lock is written through Tx::set, which first appends the
//     word's old value to the undo log beside that lock (entry, then count with release, then the
//     word with release: the repairer never sees a changed word whose old value is not logged).
//     Commit = count 0. The next acquirer that gets LockResult::owner_died rolls the log back in
//     reverse (idempotent, so a repairer that dies while repairing is itself repaired), and, when
//     the log's op is op_free, redoes the free of log.arg (a user's free that was interrupted).
//  2. A thread's cache is written without a lock only by its owner thread, with the pop/push
//     protocol of cache_protocol.hpp (INVARIANT10), so a reclaimer can tell where the one chunk in
//     flight is (see reclaim_slot).
//  3. Locks are taken in one order: dir -> class (ascending) -> arena -> segment admin (grow).
#pragma once

#include <algorithm>
#include <atomic>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>

#include "cache_protocol.hpp"
#include "layout.hpp"
#include "process_state.hpp"
#include "shmkit/heap/heap.hpp"
#include "shmkit/shm/segment.hpp"
#include "shmkit/sys/log.hpp"
#include "shmkit/sys/syscall.hpp"

namespace shmkit::heapimpl {

struct Engine {
  Heap& h;
  HeapControl& c;
  std::byte* base;

  const u64 key;  // this process's copy of the check key (Heap::key_)

  explicit Engine(Heap& heap) noexcept : h(heap), c(*heap.ctl_), base(heap.base_), key(heap.key_) {}

  // Chunk words under this heap's check key (layout.hpp).
  u64 make_word(u64 off, u64 size, u64 state, u64 owner = 0) const noexcept {
    return heapimpl::make_word(key, off, size, state, owner);
  }
  bool word_check_ok(u64 off, u64 w) const noexcept { return heapimpl::word_check_ok(key, off, w); }
  u64 not_free_tag(u64 off) const noexcept { return heapimpl::not_free_tag(key, off); }
  // INVARIANT2's tag for a chunk at off whose predecessor has `free_before` bytes arena-free (0: none).
  u64 boundary_tag(u64 off, u64 free_before) const noexcept {
    return free_before != 0 ? free_before : not_free_tag(off);
  }

  std::atomic<u64>& W(u64 off) const noexcept {
    return *reinterpret_cast<std::atomic<u64>*>(base + off);  // cast-align: off % 8 == 0 by construction
  }
  std::atomic<u64>& prev_free(u64 chunk) const noexcept { return W(chunk); }
  std::atomic<u64>& word(u64 chunk) const noexcept { return W(chunk + 8); }
  std::atomic<u64>& next(u64 chunk) const noexcept { return W(chunk + 16); }
  std::atomic<u64>& prev(u64 chunk) const noexcept { return W(chunk + 24); }
  // Central lists are stacks of batches: the first chunk of a batch holds, where an arena-free
  // chunk holds its prev link, (batch length << kBatchLenShift) | first chunk of the next batch;
  // the chunks of a batch are chained by next links ending in 0.
  std::atomic<u64>& batch_meta(u64 chunk) const noexcept { return W(chunk + 24); }
  static constexpr int kBatchLenShift = 44;
  static constexpr u64 kBatchNextMask = (u64{1} << kBatchLenShift) - 1;
  static constexpr u64 kMaxBatch = u64{1} << 19;
  u64 arena_begin() const noexcept { return h.arena_begin_; }
  u64 capacity() const noexcept { return h.capacity_; }
  static void forget(std::atomic<Heap*>& slot) noexcept;
  u64 off_of(const void* p) const noexcept {
    return static_cast<u64>(static_cast<const std::byte*>(p) - base);
  }
  // The bytes the segment backs now, remembered as the bound the hot paths check top against
  // (Heap::known_size_; the size only grows, so the largest one seen is still backed).
  u64 seg_size() const noexcept {
    const u64 size = Segment::mapped_size(base, h.capacity_);
    // relaxed: a bound private to this process; stored only when it grows, so the hot paths'
    // line stays shared.
    if (size > h.known_size_.load(std::memory_order_relaxed)) h.known_size_.store(size, std::memory_order_relaxed);
    return size;
  }

  // ---- undo log ----
  template <int N>
  struct Tx {
    Engine& e;
    UndoLog<N>& log;
    u32 n = 0;
    Tx(Engine& eng, UndoLog<N>& l, u32 op = op_other, u64 arg = 0) noexcept : e(eng), log(l) {
      // relaxed + release: op/arg are visible before any word changes (the word stores are release).
      log.arg.store(arg, std::memory_order_relaxed);
      log.op.store(op, std::memory_order_release);
    }
    void set(std::atomic<u64>& w, u64 v) noexcept {
      if (n >= static_cast<u32>(N)) {
        std::fprintf(stderr, "shmkit heap: undo log overflow (%d entries)\n", N);
        std::abort();  // a bug: every operation's writes are bounded below N
      }
      log.e[n].off = e.off_of(&w);
      log.e[n].old = w.load(std::memory_order_relaxed);
      ++n;
      // release: the entry is visible before the count that covers it.
      log.count.store(n, std::memory_order_release);
      // release: the count is visible before the changed word (so a changed word is always logged).
      w.store(v, std::memory_order_release);
    }
    void commit() noexcept {
      // release: all changed words are visible before the log says "nothing to undo".
      log.count.store(0, std::memory_order_release);
      log.op.store(op_none, std::memory_order_release);
    }
  };

  template <int N>
  void rollback(UndoLog<N>& log) noexcept {
    u32 n = std::min<u32>(log.count.load(std::memory_order_acquire), N);
    // Logged words lie in the control block or the arena: an entry naming anything else (or a
    // sum that would wrap) is refused, not written.
    const u64 size = seg_size(), lo = off_of(&c);
    for (u32 i = n; i-- > 0;) {
      u64 off = log.e[i].off;
      if (off % 8 != 0 || off < lo || size < 8 || off > size - 8) {
        h.ctl_->errors.fetch_add(1, std::memory_order_relaxed);
        continue;  // a torn entry can only be the last one, whose word was not written yet
      }
      W(off).store(log.e[i].old, std::memory_order_release);
    }
    log.count.store(0, std::memory_order_release);
  }

  // ---- locks with repair ----
  template <class Repair>
  bool lock(Lock& l, Repair&& repair) noexcept {
    LockResult r = l.acquire();
    if (r == LockResult::acquired) return true;
    if (r == LockResult::owner_died) {
      log().info("heap: a lock owner died; repairing");
      repair();
      c.repairs.fetch_add(1, std::memory_order_relaxed);  // relaxed: a statistic
      l.mark_consistent();
      return true;
    }
    return false;  // not_recoverable
  }
  static void unlock(Lock& l) noexcept { l.unlock(); }

  bool lock_arena() noexcept {
    return lock(c.arena_lock, [&] {
      rollback(c.arena_log);
      u32 op = c.arena_log.op.load(std::memory_order_acquire);
      u64 arg = c.arena_log.arg.load(std::memory_order_relaxed);
      c.arena_log.op.store(op_none, std::memory_order_relaxed);
      if (op == op_free && valid_chunk(arg)) {
        u64 st = word_state(word(arg).load(std::memory_order_acquire));
        if (st == st_used || st == st_owned) {
          Tx<kArenaLogEntries> tx(*this, c.arena_log, op_free, arg);
          arena_free(tx, arg);
          tx.commit();
        }
      }
    });
  }
  // A dead owner of class lock k may also have held the arena lock in the middle of a scavenge,
  // whose arena transaction wrote this central list: the arena is repaired first (lock order
  // class -> arena), unless this thread holds the arena lock already (try_lock_class).
  bool lock_class(int k) noexcept {
    return lock(c.classes[k].lock, [&] {
      if (lock_arena()) unlock(c.arena_lock);
      rollback(c.classes[k].log);
      c.classes[k].log.op.store(op_none, std::memory_order_relaxed);
    });
  }
  bool lock_directory() noexcept { return lock(c.dir_lock, [&] { h.repair_directory(); }); }
  // Arena lock held: never waits (a waiting class lock under the arena lock could deadlock).
  bool try_lock_class(int k) noexcept {
    Lock& l = c.classes[k].lock;
    LockResult r = l.try_acquire();
    if (r == LockResult::acquired) return true;
    if (r != LockResult::owner_died) return false;
    rollback(c.classes[k].log);
    c.classes[k].log.op.store(op_none, std::memory_order_relaxed);
    c.repairs.fetch_add(1, std::memory_order_relaxed);
    l.mark_consistent();
    return true;
  }

  // ---- chunk checks ----
  // Hostile segments (issue 10): every offset read from the segment (a list head, a link, a
  // size) is checked with one of these before anything is read or written through it. A failed
  // check takes the "corrupt list" branch of its caller: the list is dropped, c.errors counts it,
  // and the operation returns a status; verify() reports the damage.
  //
  // The end of the memory the heap may touch: top, and never past the bytes the segment backs
  // (top is itself a word of the segment).
  // The arena's lower end is h.arena_begin_, read once at attach (INVARIANT8): the control block's
  // own arena_begin is a word of the segment that another process may have overwritten since.
  u64 limit() const noexcept { return std::min<u64>(c.top.load(std::memory_order_acquire), seg_size()); }
  // top, when it is a chunk boundary of the arena this process knows (arena_begin_ <= top <= the
  // segment's size, 16-aligned); else 0, counted as an error: a damaged top is never carved at
  // (it could name the segment header or the control block). verify() reports it.
  u64 checked_top() const noexcept {
    const u64 top = c.top.load(std::memory_order_relaxed);
    if (top % 16 == 0 && top >= h.arena_begin_ && top <= seg_size()) [[likely]] return top;
    c.errors.fetch_add(1, std::memory_order_relaxed);  // relaxed: a statistic
    return 0;
  }
  // [off, off + kMinChunk) lies in the arena below lim: a chunk's header and both links of a free
  // chunk can be read and written there. Written so that no sum can wrap.
  bool readable(u64 off, u64 lim) const noexcept {
    return off % 16 == 0 && off >= h.arena_begin_ && off <= lim && lim - off >= kMinChunk;
  }
  bool readable(u64 off) const noexcept { return readable(off, limit()); }
  // A chunk offset whose header can be read and whose word is plausible for this offset.
  bool valid_chunk(u64 off) const noexcept {
    u64 lim = limit();
    if (!readable(off, lim)) return false;
    u64 w = word(off).load(std::memory_order_acquire);
    u64 s = word_size(w);
    return word_check_ok(off, w) && s >= kMinChunk && s <= lim - off;
  }
  // A chunk of class size cs in state cached (on a central list or a cache bin), lying below lim
  // whole (it may be handed to a user, who writes all of it).
  bool cached_ok(u64 off, u64 cs, u64 lim) const noexcept {
    return readable(off, lim) && cs <= lim - off &&
           word(off).load(std::memory_order_relaxed) == make_word(off, cs, st_cached);
  }
  bool cached_ok(u64 off, u64 cs) const noexcept { return cached_ok(off, cs, limit()); }
  // An arena-free chunk of at least `need` bytes that a bin list may name: its word says free, and
  // a chunk follows it below top (INVARIANT3), so its end's boundary tag and the next header can
  // be written and read.
  bool valid_free(u64 off, u64 need, u64 lim) const noexcept {
    if (!readable(off, lim)) return false;
    u64 w = word(off).load(std::memory_order_relaxed);
    u64 s = word_size(w);
    return word_check_ok(off, w) && word_state(w) == st_free && s >= kMinChunk && s >= need &&
           s <= lim - off - kMinChunk;
  }
  // A damaged bin list (a link or a head that fails the checks above) is dropped whole: its chunks
  // are lost (verify reports them), the heap stays usable. Arena lock held; plain stores, as this
  // is not part of any operation's undo: a death between them leaves a set bit over an empty list,
  // which arena_find tolerates.
  void drop_bin(int i) noexcept {
    c.errors.fetch_add(1, std::memory_order_relaxed);  // relaxed: a statistic
    c.bin_head[i].store(0, std::memory_order_release);
    c.bitmap[i / 64].fetch_and(~(u64{1} << (i % 64)), std::memory_order_release);
  }

  // ---- arena bins ----
  static int bin_index(u64 s) noexcept {
    if (s < 4096) return static_cast<int>(s >> 4);
    int e = 63 - std::countl_zero(s);
    int sub = static_cast<int>((s >> (e - 3)) & 7);
    return std::min(kBins - 1, kExactBins + (e - 12) * 8 + sub);
  }
  template <class TxT>
  void bin_insert(TxT& tx, u64 ch, u64 s) noexcept {
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
  void bin_remove(TxT& tx, u64 ch, u64 s) noexcept {
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
  u64 best_in_bin(u64 ch, u64 s, u64 lim) const noexcept {
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
  u64 arena_find(u64 s) noexcept {
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
  bool scavenge_for(u64 need, bool all = false) noexcept {
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
  static constexpr u64 kFlushFraction = 64;
  void flush_for_large() noexcept {
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

  // This thread's slot when it has one already; never claims one (so callable under the arena
  // lock, where my_slot_slow's reclaim_dead could not run).
  CacheSlot* my_slot_if_any() const noexcept {
    const std::uint64_t g = g_generation.load(std::memory_order_relaxed);
    for (const TlsEntry& e : t_cache)
      if (e.ctl == h.ctl_ && e.gen == g) return e.slot;
    return nullptr;
  }

  // Arena lock held, by the owner of `bin`: moves up to `count` chunks from the front of the bin
  // to the arena, one arena transaction each (which also logs the bin's head and count, so a
  // death is rolled back by the arena's repairer before reclaim_slot reads the bin).
  void bin_to_arena(CacheBin& bin, u64 cs, u64 count) noexcept {
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
  bool ensure_room(u64 end) noexcept {
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
  u64 arena_alloc(TxT& tx, u64 s, u64 state, u64 owner) noexcept {
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
  void arena_free(TxT& tx, u64 ch) noexcept {
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
  u64 free_chunk_before(u64 ch, u64 pf) const noexcept {
    if (pf == 0 || pf % 16 != 0 || pf < kMinChunk || pf > ch - h.arena_begin_) return 0;
    const u64 p = ch - pf;
    const u64 pw = word(p).load(std::memory_order_relaxed);
    return word_check_ok(p, pw) && word_state(pw) == st_free && word_size(pw) == pf ? p : 0;
  }

  // The header left where a freed chunk began when it was merged into a neighbour or into the
  // space above top: size 0 (never a valid chunk), state free, this offset's check bits — so a
  // second free of the same pointer is still recognised as a double free.
  u64 tombstone(u64 off) const noexcept { return make_word(off, 0, st_free); }

  // ---- owner index for owned allocations ----
  int my_owner_idx() noexcept {
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

  // ---- caches ----
  static constexpr u64 batch_for(int k) noexcept {
    return std::clamp<u64>(16384 / class_size(k), 8, 64);
  }

  CacheSlot* my_slot() noexcept {
    std::uint64_t g = g_generation.load(std::memory_order_relaxed);
    TlsEntry& e0 = t_cache[0];
    if (e0.ctl == h.ctl_ && e0.gen == g) [[likely]] return e0.slot;
    return my_slot_slow(g);
  }
  CacheSlot* my_slot_slow(std::uint64_t g) noexcept;
  void release_slot(CacheSlot* s) noexcept;
  void reclaim_slot(CacheSlot* s) noexcept;

  // Moves up to batch chunks of class k to the (empty) bin of slot s. false when out of memory.
  bool refill(CacheSlot* s, int k) noexcept {
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
  void carve(TxT& tx, u64 start, u64 m, u64 cs, CacheBin& bin) noexcept {
    for (u64 i = 0; i < m; ++i) {
      u64 o = start + i * cs;
      tx.set(prev_free(o), not_free_tag(o));
      tx.set(word(o), make_word(o, cs, st_cached));
      tx.set(next(o), i + 1 < m ? o + cs : 0);
    }
    tx.set(bin.head, start);
    tx.set(bin.count, m);
  }
  void note_high_water(u64 t) noexcept {
    // relaxed: a statistic, written under the arena lock.
    if (t > c.high_water.load(std::memory_order_relaxed)) c.high_water.store(t, std::memory_order_relaxed);
  }

  // Moves `count` chunks from the front of bin k of s to the central list (or, when that is
  // long already, back to the arena).
  void spill(CacheSlot* s, int k, u64 count) noexcept {
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
  void push_central(int k, u64 ch, std::atomic<u64>* also_clear) noexcept {
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

  // ---- allocation ----
  static u64 chunk_size_for(std::size_t n) noexcept {
    if (n > (u64{1} << 42)) return 0;
    return std::max<u64>(kMinChunk, round_up(n + kHeaderSize, 16));
  }

  void* allocate(std::size_t n, std::size_t align, bool owned) noexcept {
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

  void* arena_allocate(u64 s, u64 state, u64 owner, u64 align) noexcept {
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
  u64 trim_aligned(TxT& tx, u64 ch, u64 s, u64 align, u64 state, u64 owner) noexcept {
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

  // Validates a user pointer; returns the chunk offset and its word, or a status.
  HeapStatus check_block(const void* p, u64& ch, u64& w) const noexcept {
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

  HeapStatus deallocate(void* p) noexcept {
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
};

}  // namespace shmkit::heapimpl
