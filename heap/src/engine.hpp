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
//
// Engine is declared here, with its view of the segment (chunk words, bounds checks). Its
// operations are defined one lock domain per file, included at the end of this header (inline,
// so the hot paths inline them as they did when the class was one file):
//   undo_tx.hpp        the undo-log transaction and the locks with their owner-death repair
//   arena.hpp          arena lock: bins, alloc/free with coalescing, scavenge, flush, growth
//   central_lists.hpp  class lock k: refill and spill of a cache bin from and to central list k
//   thread_cache.hpp   no lock: this thread's cache slot (claiming and releasing: heap.cpp)
//   allocate.hpp       allocate and deallocate: the full paths, and the checks of a user pointer
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

  // ---- undo log and locks with repair: undo_tx.hpp ----
  template <int N>
  struct Tx;
  template <int N>
  void rollback(UndoLog<N>& log) noexcept;
  template <class Repair>
  bool lock(Lock& l, Repair&& repair) noexcept;
  static void unlock(Lock& l) noexcept { l.unlock(); }
  bool lock_arena() noexcept;
  bool lock_class(int k) noexcept;
  bool lock_directory() noexcept;
  bool try_lock_class(int k) noexcept;

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

  // ---- arena: arena.hpp ----
  void drop_bin(int i) noexcept;
  static int bin_index(u64 s) noexcept;
  template <class TxT>
  void bin_insert(TxT& tx, u64 ch, u64 s) noexcept;
  template <class TxT>
  void bin_remove(TxT& tx, u64 ch, u64 s) noexcept;
  u64 best_in_bin(u64 ch, u64 s, u64 lim) const noexcept;
  u64 arena_find(u64 s) noexcept;
  bool scavenge_for(u64 need, bool all = false) noexcept;
  void flush_for_large() noexcept;
  void bin_to_arena(CacheBin& bin, u64 cs, u64 count) noexcept;
  bool ensure_room(u64 end) noexcept;
  template <class TxT>
  u64 arena_alloc(TxT& tx, u64 s, u64 state, u64 owner) noexcept;
  template <class TxT>
  void arena_free(TxT& tx, u64 ch) noexcept;
  u64 free_chunk_before(u64 ch, u64 pf) const noexcept;
  u64 tombstone(u64 off) const noexcept;
  void note_high_water(u64 t) noexcept;
  void* arena_allocate(u64 s, u64 state, u64 owner, u64 align) noexcept;
  template <class TxT>
  u64 trim_aligned(TxT& tx, u64 ch, u64 s, u64 align, u64 state, u64 owner) noexcept;
  static constexpr u64 kFlushFraction = 64;  // flush_for_large's threshold

  // ---- central lists: central_lists.hpp ----
  bool refill(CacheSlot* s, int k) noexcept;
  template <class TxT>
  void carve(TxT& tx, u64 start, u64 m, u64 cs, CacheBin& bin) noexcept;
  void spill(CacheSlot* s, int k, u64 count) noexcept;
  void push_central(int k, u64 ch, std::atomic<u64>* also_clear) noexcept;

  // ---- this thread's cache: thread_cache.hpp; claiming and releasing slots: heap.cpp ----
  static constexpr u64 batch_for(int k) noexcept;
  CacheSlot* my_slot() noexcept;
  CacheSlot* my_slot_if_any() const noexcept;
  CacheSlot* my_slot_slow(std::uint64_t g) noexcept;
  void release_slot(CacheSlot* s) noexcept;
  void reclaim_slot(CacheSlot* s) noexcept;

  // ---- allocation: allocate.hpp ----
  int my_owner_idx() noexcept;
  static u64 chunk_size_for(std::size_t n) noexcept;
  void* allocate(std::size_t n, std::size_t align, bool owned) noexcept;
  HeapStatus check_block(const void* p, u64& ch, u64& w) const noexcept;
  HeapStatus deallocate(void* p) noexcept;
};

}  // namespace shmkit::heapimpl

// The definitions, one lock domain per file (see above).
#include "undo_tx.hpp"
#include "arena.hpp"
#include "central_lists.hpp"
#include "thread_cache.hpp"
#include "allocate.hpp"
