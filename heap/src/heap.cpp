// The heap engine. Shared layout and invariants: layout.hpp. Overview: heap.hpp.
//
// Crash-safety discipline (what makes a SIGKILL at any instruction repairable):
//  1. Every word written under a heap lock is written through Tx::set, which first appends the
//     word's old value to the undo log beside that lock (entry, then count with release, then the
//     word with release: the repairer never sees a changed word whose old value is not logged).
//     Commit = count 0. The next acquirer that gets LockResult::owner_died rolls the log back in
//     reverse (idempotent, so a repairer that dies while repairing is itself repaired), and, when
//     the log's op is op_free, redoes the free of log.arg (a user's free that was interrupted).
//  2. A thread's cache is written without a lock only by its owner thread, and only in the two
//     hot paths below; the one chunk in flight between the cache and the user is recorded in
//     CacheSlot::pending first, so a reclaimer can tell where it is (see reclaim_slot).
//  3. Locks are taken in one order: dir -> class (ascending) -> arena -> segment admin (grow).
#include "shmkit/heap/heap.hpp"
#include "shmkit/heap/allocator.hpp"

#include <fcntl.h>
#include <pthread.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <bit>
#include <cstdio>
#include <cstring>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <unordered_set>

#include "layout.hpp"
#include "shmkit/shm/segment.hpp"
#include "shmkit/sys/error.hpp"
#include "shmkit/sys/log.hpp"
#include "shmkit/sys/process.hpp"
#include "shmkit/sys/syscall.hpp"

namespace shmkit {

using namespace heapimpl;

const char* to_string(HeapStatus s) noexcept {
  switch (s) {
    case HeapStatus::ok: return "ok";
    case HeapStatus::null_pointer: return "null pointer";
    case HeapStatus::foreign_pointer: return "foreign pointer (not a block of this heap)";
    case HeapStatus::double_free: return "double free (the block is already free)";
    case HeapStatus::corrupt: return "heap corrupt";
  }
  return "?";
}

std::uint64_t Heap::hash_type(const char* name, std::size_t size, std::size_t align) noexcept {
  std::uint64_t h = 0xcbf29ce484222325ULL;  // FNV-1a
  for (const char* p = name; *p; ++p) h = (h ^ static_cast<unsigned char>(*p)) * 0x100000001b3ULL;
  h = (h ^ size) * 0x100000001b3ULL;
  h = (h ^ align) * 0x100000001b3ULL;
  return h;
}

namespace {

// -- process-local registry ----------------------------------------------------------------------
constexpr int kMaxAttached = 16;
std::mutex g_registry_mutex;
std::atomic<Heap*> g_heaps[kMaxAttached];
// Bumped on fork (child) and detach: thread-local cache entries of an older generation are stale.
std::atomic<std::uint64_t> g_generation{1};

struct TlsEntry {
  HeapControl* ctl;
  CacheSlot* slot;
  std::uint64_t gen;
};
constexpr int kTlsEntries = 4;
constinit thread_local TlsEntry t_cache[kTlsEntries] __attribute__((tls_model("initial-exec"))) = {};

}  // namespace
// Per-process state of one attached heap (owner index, slots claimed by this process's threads).
struct Heap::ProcState {
  std::mutex mu;
  std::vector<CacheSlot*> slots;
  int owner_idx = -1;
  std::uint64_t owner_gen = 0;
};
namespace {
using ProcState = Heap::ProcState;
std::unordered_map<const HeapControl*, std::unique_ptr<ProcState>>& proc_states() {
  static auto* m = new std::unordered_map<const HeapControl*, std::unique_ptr<ProcState>>();
  return *m;
}

std::uint64_t packed_identity(pid_t id) noexcept {
  std::uint64_t st = sys::process_start_time(id);
  return (static_cast<std::uint64_t>(static_cast<std::uint32_t>(id)) << 32) | (st & 0xffffffffULL);
}
bool packed_alive(std::uint64_t packed) noexcept {
  if (packed == 0) return false;
  auto id = static_cast<pid_t>(packed >> 32);
  std::uint64_t st = sys::process_start_time(id);
  return st != 0 && (st & 0xffffffffULL) == (packed & 0xffffffffULL);
}
thread_local std::uint64_t t_packed = 0;
thread_local std::uint64_t t_packed_gen = 0;
std::uint64_t my_thread_packed() noexcept {
  std::uint64_t g = g_generation.load(std::memory_order_relaxed);
  if (t_packed_gen != g || t_packed == 0) {
    t_packed = packed_identity(sys::gettid());
    t_packed_gen = g;
  }
  return t_packed;
}

void atfork_prepare() { g_registry_mutex.lock(); }
void atfork_parent() { g_registry_mutex.unlock(); }
void atfork_child() {
  // relaxed: the child has one thread now.
  g_generation.fetch_add(1, std::memory_order_relaxed);
  for (auto& [ctl, ps] : proc_states()) {
    new (&ps->mu) std::mutex();  // a parent thread may have held it at fork time
    ps->slots.clear();           // the parent's threads own those slots, not us
    ps->owner_idx = -1;
  }
  g_registry_mutex.unlock();
}

inline std::uint64_t round_up(std::uint64_t v, std::uint64_t a) noexcept { return (v + a - 1) & ~(a - 1); }

}  // namespace

// -- engine --------------------------------------------------------------------------------------
struct Heap::Engine {
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
              // The pop (see reclaim_slot for how a death between any two stores is undone):
              // relaxed for pending; the release store of head orders it first.
              slot->pending.store(ch, std::memory_order_relaxed);
              u64 nx = next(ch).load(std::memory_order_relaxed);
              // The next pop of this class reads nx's header: start the (likely) cache miss now.
              __builtin_prefetch(base + nx + 8, 1);
              bin.head.store(nx, std::memory_order_release);
              bin.count.store(bin.count.load(std::memory_order_relaxed) - 1, std::memory_order_relaxed);
              word(ch).store(make_word(ch, s, state, static_cast<u64>(owner)), std::memory_order_release);
              slot->pending.store(0, std::memory_order_release);
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
        // The push: pending first (relaxed; the release below orders it), then the state, the link
        // and the head. reclaim_slot: head == pending <=> the push completed.
        slot->pending.store(ch, std::memory_order_relaxed);
        u64 cached = make_word(ch, s, st_cached);
        if (word_state(w) == st_owned) {
          // An owned block can be freed at the same moment by reclaim_dead (its owner died): the
          // CAS decides who frees it. acq_rel: pairs with reclaim's CAS.
          if (!word(ch).compare_exchange_strong(w, cached, std::memory_order_acq_rel)) {
            slot->pending.store(0, std::memory_order_release);
            c.errors.fetch_add(1, std::memory_order_relaxed);
            return HeapStatus::double_free;
          }
        } else {
          word(ch).store(cached, std::memory_order_release);
        }
        next(ch).store(bin.head.load(std::memory_order_relaxed), std::memory_order_relaxed);
        bin.head.store(ch, std::memory_order_release);
        u64 cnt = bin.count.load(std::memory_order_relaxed) + 1;
        bin.count.store(cnt, std::memory_order_relaxed);
        slot->pending.store(0, std::memory_order_release);
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

// ---- cache slots ----
namespace {
// Gives this thread's slots back when the thread exits.
struct ThreadReaper {
  ~ThreadReaper();
};
thread_local ThreadReaper t_reaper;
}  // namespace

CacheSlot* Heap::Engine::my_slot_slow(std::uint64_t g) noexcept {
  // Another entry of the small thread-local table?
  for (int i = 1; i < kTlsEntries; ++i) {
    if (t_cache[i].ctl == h.ctl_ && t_cache[i].gen == g) {
      std::swap(t_cache[0], t_cache[i]);
      return t_cache[0].slot;
    }
  }
  (void)&t_reaper;  // odr-use: constructs the reaper of this thread
  u64 me = my_thread_packed();
  CacheSlot* got = nullptr;
  for (int pass = 0; pass < 2 && got == nullptr; ++pass) {
    for (auto& s : c.caches) {
      u64 expected = 0;
      // acq_rel: pairs with the release that freed the slot (its bins were emptied before).
      if (s.owner.load(std::memory_order_relaxed) == 0 &&
          s.owner.compare_exchange_strong(expected, me, std::memory_order_acq_rel)) {
        got = &s;
        break;
      }
    }
    if (got == nullptr && pass == 0) h.reclaim_dead();
  }
  if (got == nullptr) return nullptr;
  got->pid.store(static_cast<u64>(::getpid()), std::memory_order_relaxed);
  {
    std::lock_guard lk(h.proc_->mu);
    h.proc_->slots.push_back(got);
  }
  std::memmove(&t_cache[1], &t_cache[0], sizeof(TlsEntry) * (kTlsEntries - 1));
  t_cache[0] = TlsEntry{h.ctl_, got, g};
  return got;
}

// Moves every bin of a slot owned by this thread (or claimed for reclaiming) to the central lists
// and frees the slot.
void Heap::Engine::release_slot(CacheSlot* s) noexcept {
  for (int k = 0; k < kClasses; ++k) {
    CacheBin& bin = s->bins[k];
    if (bin.head.load(std::memory_order_relaxed) == 0) continue;
    if (!lock_class(k)) continue;
    ClassCentral& cc = c.classes[k];
    u64 head = bin.head.load(std::memory_order_relaxed);
    u64 cs = class_size(k);
    u64 last = 0, got = 0;
    const u64 lim = limit();
    for (u64 ch = head; ch != 0 && got < kMaxBatch;) {
      if (!cached_ok(ch, cs, lim)) {
        c.errors.fetch_add(1, std::memory_order_relaxed);
        break;
      }
      last = ch;
      ++got;
      ch = next(ch).load(std::memory_order_relaxed);
    }
    Tx<kClassLogEntries> tx(*this, cc.log);
    if (last != 0) {
      tx.set(next(last), 0);  // (cuts a corrupt tail off)
      tx.set(batch_meta(head), (got << kBatchLenShift) | cc.head.load(std::memory_order_relaxed));
      tx.set(cc.head, head);
      tx.set(cc.count, cc.count.load(std::memory_order_relaxed) + got);
    }
    tx.set(bin.head, 0);
    tx.set(bin.count, 0);
    tx.commit();
    unlock(cc.lock);
  }
  // release: the emptied bins are visible before the slot can be claimed again.
  s->owner.store(0, std::memory_order_release);
}

// A slot whose owner died (and which this thread has claimed by CAS): settle the pending chunk,
// then move everything to the central lists. Every lock that the dead owner may have held while
// writing this slot is acquired (and so repaired) before the slot is read.
void Heap::Engine::reclaim_slot(CacheSlot* s) noexcept {
  if (lock_arena()) unlock(c.arena_lock);
  u64 p = s->pending.load(std::memory_order_acquire);
  if (p != 0) {
    u64 w = valid_chunk(p) ? word(p).load(std::memory_order_acquire) : 0;
    u64 sz = word_size(w);
    if (w != 0 && sz <= kSmallMax && word_state(w) != st_free) {
      int k = class_of_size(sz);
      bool ours = true;
      if (word_state(w) == st_owned) {
        // acq_rel: races with reclaim_dead freeing the owned block of a dead process.
        ours = word(p).compare_exchange_strong(w, make_word(p, sz, st_cached), std::memory_order_acq_rel);
      }
      if (!ours) {
        s->pending.store(0, std::memory_order_release);
      } else if (lock_class(k)) {
        // head == p: the push completed (or the pop had not begun) and p is on the list.
        // Otherwise p is off the list: a free that had begun, or an allocation never returned.
        if (s->bins[k].head.load(std::memory_order_relaxed) != p) push_central(k, p, &s->pending);
        else s->pending.store(0, std::memory_order_release);
        unlock(c.classes[k].lock);
      }
    } else {
      s->pending.store(0, std::memory_order_release);
    }
  }
  for (int k = 0; k < kClasses; ++k) {
    // Count may be torn by the death; release_slot walks the list.
    if (s->bins[k].head.load(std::memory_order_relaxed) == 0 && s->bins[k].count.load(std::memory_order_relaxed) != 0)
      s->bins[k].count.store(0, std::memory_order_relaxed);
  }
  release_slot(s);
  c.caches_reclaimed.fetch_add(1, std::memory_order_relaxed);
}

namespace {
// True when [p, p+8) is mapped in this process: a thread can outlive the Segment its cache lives
// in (closed without Heap::detach), and must not fault at exit. process_vm_readv on ourselves
// returns -EFAULT instead of faulting.
bool mapped(const void* p) noexcept {
  std::uint64_t v = 0;
  iovec local{&v, sizeof v};
  iovec remote{const_cast<void*>(p), sizeof v};
  return shmkit::sys::process_vm_readv(::getpid(), &local, 1, &remote, 1) == static_cast<ssize_t>(sizeof v);
}

ThreadReaper::~ThreadReaper() {
  std::uint64_t g = g_generation.load(std::memory_order_relaxed);
  std::lock_guard lk(g_registry_mutex);
  for (auto& e : t_cache) {
    if (e.ctl == nullptr || e.gen != g) continue;
    // Only a slot that is still mapped and still ours (not a new segment at the same address).
    if (!mapped(&e.slot->owner) || e.slot->owner.load(std::memory_order_acquire) != my_thread_packed()) {
      e = TlsEntry{};
      continue;
    }
    for (auto& hp : g_heaps) {
      Heap* hh = hp.load(std::memory_order_acquire);
      if (hh != nullptr && hh->control() == e.ctl) {
        Heap::Engine eng(*hh);
        eng.release_slot(e.slot);
        auto& ps = proc_states()[e.ctl];
        std::lock_guard lk2(ps->mu);
        std::erase(ps->slots, e.slot);
      }
    }
    e = TlsEntry{};
  }
}
}  // namespace

// ---- Heap ----
// ctl was validated by attach: its arena_begin is this process's copy from now on (INVARIANT8).
// The Heap keeps what it needs of the mapping, never the Segment object (which may be moved).
Heap::Heap(Segment& seg, HeapControl* ctl)
    : ctl_(ctl),
      base_(seg.base()),
      capacity_(seg.capacity()),
      fd_(static_cast<int>(sys::check(sys::dup_cloexec(seg.fd()), "Heap::attach: segment " + seg.name() + ": dup its descriptor"))),
      name_(seg.name()),
      key_(ctl->check_key),
      arena_begin_(ctl->arena_begin),
      known_size_(seg.size()) {}

namespace {
// The heap's check key (layout.hpp, check_bits): 8 bytes from the kernel's random source.
u64 random_check_key(const std::string& segment) {
  const int fd = sys::open("/dev/urandom", O_RDONLY | O_CLOEXEC);
  sys::check(fd, "Heap::attach: segment " + segment + ": open /dev/urandom for the heap's check key");
  u64 key = 0;
  const ssize_t n = sys::read(fd, &key, sizeof key);
  (void)sys::close(fd);  // read-only: nothing to lose
  sys::check(n, "Heap::attach: segment " + segment + ": read /dev/urandom");
  if (n != static_cast<ssize_t>(sizeof key))
    throw Error(Errc::system, "Heap::attach: segment " + segment + ": short read from /dev/urandom");
  return key;
}
}  // namespace
Heap::~Heap() { (void)sys::close(fd_); }  // our own descriptor: nothing to flush

// Registry mutex held. Gives this process's caches of the heap in `slot` back, stales every
// thread's cache entry and deletes the Heap (no thread may be using it: detach's contract, and a
// mapping being unmapped).
void Heap::Engine::forget(std::atomic<Heap*>& slot) noexcept {
  Heap* hh = slot.load(std::memory_order_relaxed);
  Engine eng(*hh);
  {
    std::lock_guard lk(hh->proc_->mu);
    for (CacheSlot* s : hh->proc_->slots) eng.release_slot(s);
    hh->proc_->slots.clear();
    hh->proc_->owner_idx = -1;
  }
  g_generation.fetch_add(1, std::memory_order_relaxed);  // stale every thread's cache entry
  slot.store(nullptr, std::memory_order_release);
  proc_states().erase(hh->ctl_);
  delete hh;
}

namespace {
// The close hook of a mapping with a Heap: the last Segment object of the mapping in this process
// is closing (the memory is still mapped).
void heap_mapping_closed(std::byte* /*map*/, void* heap) {
  std::lock_guard lk(g_registry_mutex);
  for (auto& hp : g_heaps)
    if (hp.load(std::memory_order_relaxed) == heap) Heap::Engine::forget(hp);
}
}  // namespace

Heap& Heap::attach(Segment& seg) {
  static std::once_flag once;
  std::call_once(once, [] { pthread_atfork(atfork_prepare, atfork_parent, atfork_child); });
  if (!seg.valid()) throw Error(Errc::invalid_argument, "Heap::attach: the segment is not open");
  {
    std::lock_guard lk(g_registry_mutex);
    for (auto& hp : g_heaps) {
      Heap* hh = hp.load(std::memory_order_relaxed);
      // The mapping's Heap, through whichever Segment object (a Heap is forgotten when its
      // mapping closes, so one at this address is this mapping's).
      if (hh != nullptr && hh->base_ == seg.base()) return *hh;
    }
  }
  auto& root = seg.header().root(RootSlot::heap);
  const u64 ctl_off = round_up(SegmentHeader::kDataOffset, 64);
  const u64 arena_begin = round_up(ctl_off + sizeof(HeapControl), 4096);
  // acquire: pairs with the release store that published the control block.
  if (root.load(std::memory_order_acquire) == 0) {
    const u64 key = random_check_key(seg.name());
    if (seg.size() < arena_begin + 65536) seg.grow(arena_begin + 65536);
    LockResult r = seg.admin_lock().acquire();
    if (r == LockResult::not_recoverable)
      throw Error(Errc::not_recoverable, "Heap::attach: the segment's admin lock is not recoverable");
    // owner_died: the admin lock's other users repair their own state (segment.cpp); a heap
    // initialisation that died before publishing the root is simply redone below.
    if (r == LockResult::owner_died) seg.admin_lock().mark_consistent();
    if (root.load(std::memory_order_acquire) == 0) {
      auto* raw = seg.base() + ctl_off;
      std::memset(static_cast<void*>(raw), 0, sizeof(HeapControl));
      auto* ctl = reinterpret_cast<HeapControl*>(raw);
      ctl->magic = kHeapMagic;
      ctl->version = kHeapVersion;
      ctl->control_size = static_cast<u32>(sizeof(HeapControl));
      ctl->arena_begin = arena_begin;
      ctl->check_key = key;
      ctl->top.store(arena_begin, std::memory_order_relaxed);
      ctl->high_water.store(arena_begin, std::memory_order_relaxed);
      root.store(ctl_off, std::memory_order_release);  // publishes the initialised block
    }
    seg.admin_lock().unlock();
  }
  u64 off = root.load(std::memory_order_acquire);
  // A misaligned root is refused before the block is read through it.
  // A control block inside the segment header (the attach table, the admin lock) is refused too.
  auto* ctl = off % 64 != 0 || off < SegmentHeader::kDataOffset
                  ? nullptr
                  : static_cast<HeapControl*>(seg.pointer_at(off, sizeof(HeapControl)));
  // Every control-block field the engine uses as an offset is checked here once (issue 10);
  // the engine's bounds checks compare against arena_begin and top.
  const u64 top = ctl == nullptr ? 0 : ctl->top.load(std::memory_order_acquire);
  if (ctl == nullptr || ctl->magic != kHeapMagic || ctl->version != kHeapVersion ||
      ctl->control_size != sizeof(HeapControl) || ctl->arena_begin < off + sizeof(HeapControl) ||
      ctl->arena_begin % 16 != 0 || ctl->arena_begin > seg.size() || top % 16 != 0 ||
      top < ctl->arena_begin || top > seg.size())
    throw Error(Errc::corrupt, "Heap::attach: segment " + seg.name() +
                                   " has no valid heap control block at its heap root (offset " +
                                   std::to_string(off) + "); it was made by another version or is damaged");
  std::lock_guard lk(g_registry_mutex);
  for (auto& hp : g_heaps) {
    Heap* hh = hp.load(std::memory_order_relaxed);
    if (hh != nullptr && hh->base_ == seg.base()) return *hh;
  }
  for (auto& hp : g_heaps) {
    if (hp.load(std::memory_order_relaxed) == nullptr) {
      auto heap_owner = std::make_unique<Heap>(seg, ctl);
      seg.add_close_hook(&heap_mapping_closed, heap_owner.get());
      Heap* heap = heap_owner.release();
      auto& ps = proc_states()[ctl];
      if (!ps) ps = std::make_unique<ProcState>();
      heap->proc_ = ps.get();
      hp.store(heap, std::memory_order_release);  // pairs with find_attached's acquire
      return *heap;
    }
  }
  throw Error(Errc::invalid_argument, "Heap::attach: more than 16 heaps attached in this process");
}

Heap* Heap::find_attached(const void* p) noexcept {
  auto* b = static_cast<const std::byte*>(p);
  for (auto& hp : g_heaps) {
    Heap* hh = hp.load(std::memory_order_acquire);
    if (hh != nullptr && b >= hh->base_ && b < hh->base_ + hh->capacity_) return hh;
  }
  return nullptr;
}

void Heap::detach(Segment& seg) noexcept {
  std::lock_guard lk(g_registry_mutex);
  for (auto& hp : g_heaps) {
    Heap* hh = hp.load(std::memory_order_relaxed);
    if (hh == nullptr || hh->base_ != seg.base()) continue;
    seg.remove_close_hook(hh);
    Engine::forget(hp);
  }
}

namespace {
// The bin length above which a free spills batch_for(k) chunks: 2 x batch_for(k), a table so that
// the hot path has no division.
constexpr std::array<u64, kClasses> kSpillAbove = [] {
  std::array<u64, kClasses> a{};
  for (int k = 0; k < kClasses; ++k) a[static_cast<std::size_t>(k)] = 2 * Heap::Engine::batch_for(k);
  return a;
}();
// The full paths, out of line so that the hot paths below need no stack frame.
[[gnu::noinline]] void* allocate_slow(Heap& h, std::size_t n, std::size_t align) noexcept {
  return Heap::Engine(h).allocate(n, align, false);
}
[[gnu::noinline]] HeapStatus deallocate_slow(Heap& h, void* p) noexcept { return Heap::Engine(h).deallocate(p); }
[[gnu::noinline]] void spill_slow(Heap& h, CacheSlot* slot, int k, u64 count) noexcept {
  Heap::Engine(h).spill(slot, k, count);
}
}  // namespace

// The hot paths: the common case of Engine::allocate / Engine::deallocate (a small block, align
// <= 16, state used, this thread's slot at the front of its table) with the same checks and the
// same pop/push protocol, written with few instructions: a free's one cost is the miss on the
// chunk header, and the fewer instructions each free has, the more frees' misses the processor
// keeps in flight at once (heap_batch_200k frees 200,000 blocks whose headers are all cold).
// Anything else takes the engine's full path, which checks and reports everything.
void* Heap::allocate(std::size_t n, std::size_t align) noexcept {
  const TlsEntry& e0 = t_cache[0];
  // align - 1 < 16 with align a power of two: align in {1, 2, 4, 8, 16} (align 0 wraps and fails).
  if (n <= kSmallMax - kHeaderSize && align - 1 < 16 && (align & (align - 1)) == 0 && e0.ctl == ctl_ &&
      e0.gen == g_generation.load(std::memory_order_relaxed)) [[likely]] {
    const u64 s = n <= kMinChunk - kHeaderSize ? kMinChunk : round_up(n + kHeaderSize, 16);  // chunk_size_for
    CacheSlot* slot = e0.slot;
    CacheBin& bin = slot->bins[class_of_size(s)];
    const u64 ch = bin.head.load(std::memory_order_relaxed);
    // relaxed: bounds only. top is a word of the segment: it is trusted only up to the size this
    // process has seen backed (known_size_; a larger top takes the full path, which checks it).
    const u64 top = ctl_->top.load(std::memory_order_relaxed);
    const u64 known = known_size_.load(std::memory_order_relaxed);
    // The checks of Engine::allocate: the head lies in the arena, the whole chunk below top, and
    // its word says cached, of this class, at this offset. Compares only, no sum that could wrap.
    if (ch % 16 == 0 && ch >= arena_begin_ && ch < top && top - ch >= s && top <= known) [[likely]] {
      auto& word = *reinterpret_cast<std::atomic<u64>*>(base_ + ch + 8);  // cast-align: ch % 16 == 0
      if (word.load(std::memory_order_relaxed) == make_word(key_, ch, s, st_cached)) [[likely]] {
        // The pop (see reclaim_slot for how a death between any two stores is undone): relaxed
        // for pending; the release store of head orders it first.
        slot->pending.store(ch, std::memory_order_relaxed);
        const u64 nx = reinterpret_cast<std::atomic<u64>*>(base_ + ch + 16)->load(std::memory_order_relaxed);
        // The next pop of this class reads nx's header and link: start the (likely) cache miss
        // now (two lines when the chunk starts 48 bytes into one).
        __builtin_prefetch(base_ + nx + 8, 1);
        __builtin_prefetch(base_ + nx + 16, 1);
        bin.head.store(nx, std::memory_order_release);
        bin.count.store(bin.count.load(std::memory_order_relaxed) - 1, std::memory_order_relaxed);
        word.store(make_word(key_, ch, s, st_used), std::memory_order_release);
        slot->pending.store(0, std::memory_order_release);
        return base_ + ch + kHeaderSize;
      }
    }
  }
  return allocate_slow(*this, n, align);
}
void* Heap::allocate_owned(std::size_t n, std::size_t align) noexcept {
  return Engine(*this).allocate(n, align, true);
}
HeapStatus Heap::deallocate(void* p) noexcept {
  const TlsEntry& e0 = t_cache[0];
  // As integers: p may lie below base (off wraps to a huge value and fails the range test).
  const u64 off = reinterpret_cast<std::uintptr_t>(p) - reinterpret_cast<std::uintptr_t>(base_);
  const u64 top = ctl_->top.load(std::memory_order_acquire);
  // relaxed: a bound private to this process (see allocate).
  const u64 known = known_size_.load(std::memory_order_relaxed);
  if (off % 16 == 0 && off >= arena_begin_ + kHeaderSize && off < top && top <= known && e0.ctl == ctl_ &&
      e0.gen == g_generation.load(std::memory_order_relaxed)) [[likely]] {
    const u64 ch = off - kHeaderSize;
    auto& word = *reinterpret_cast<std::atomic<u64>*>(base_ + ch + 8);  // cast-align: ch % 16 == 0
    const u64 w = word.load(std::memory_order_acquire);
    // relaxed: the boundary tag shares the header's line; one that is not this offset's keyed
    // tag (a chunk after an arena-free one, or no chunk) takes the full path.
    const u64 tag = reinterpret_cast<std::atomic<u64>*>(base_ + ch)->load(std::memory_order_relaxed);
    const u64 s = word_size(w);
    // check_block's tests, for a small chunk in state used (owned chunks take the full path, for
    // its CAS against reclaim_dead) after a chunk that is not arena-free: the check bits and the
    // tag of this offset, the state, the size in range and the chunk below top.
    if ((w & ~kSizeMask) == (check_bits(key_, ch) | st_used) && tag == not_free_tag(key_, ch) && s >= kMinChunk &&
        s <= kSmallMax && s <= top - ch) [[likely]] {
      CacheSlot* slot = e0.slot;
      const int k = class_of_size(s);
      CacheBin& bin = slot->bins[k];
      // The push of Engine::deallocate: pending first (relaxed; the release below orders it),
      // then the state, the link and the head. reclaim_slot: head == pending <=> the push completed.
      slot->pending.store(ch, std::memory_order_relaxed);
      word.store(make_word(key_, ch, s, st_cached), std::memory_order_release);
      reinterpret_cast<std::atomic<u64>*>(base_ + ch + 16)->store(bin.head.load(std::memory_order_relaxed),
                                                                  std::memory_order_relaxed);
      bin.head.store(ch, std::memory_order_release);
      const u64 cnt = bin.count.load(std::memory_order_relaxed) + 1;
      bin.count.store(cnt, std::memory_order_relaxed);
      slot->pending.store(0, std::memory_order_release);
      const u64 above = kSpillAbove[static_cast<std::size_t>(k)];
      if (cnt > above) [[unlikely]] spill_slow(*this, slot, k, above / 2);
      return HeapStatus::ok;
    }
  }
  return deallocate_slow(*this, p);
}

std::size_t Heap::usable_size(const void* p) const noexcept {
  u64 ch = 0, w = 0;
  if (Engine(const_cast<Heap&>(*this)).check_block(p, ch, w) != HeapStatus::ok) return 0;
  return word_size(w) - kHeaderSize;
}
bool Heap::owns(const void* p) const noexcept { return usable_size(p) != 0; }

void* Heap::reallocate(void* p, std::size_t n) noexcept {
  Engine e(*this);
  if (p == nullptr) return e.allocate(n, 16, false);
  u64 ch = 0, w = 0;
  if (e.check_block(p, ch, w) != HeapStatus::ok) {
    ctl_->errors.fetch_add(1, std::memory_order_relaxed);
    return nullptr;
  }
  std::size_t have = word_size(w) - kHeaderSize;
  if (n <= have) return p;
  void* q = e.allocate(n, 16, word_state(w) == st_owned);
  if (q == nullptr) return nullptr;
  std::memcpy(q, p, have);
  (void)e.deallocate(p);
  return q;
}

// ---- the directory lock ----
namespace {
// The directory locks this thread holds, innermost last (process-private: never read from the
// segment). A constructor run by find_or_construct may use another heap's directory, hence a stack.
constexpr int kMaxDirDepth = 8;
thread_local const HeapControl* t_dir_held[kMaxDirDepth];
thread_local int t_dir_depth = 0;

// Holds a heap's directory lock for a scope (repaired when its previous owner died). A scope
// nested in one of this thread that holds the same lock takes nothing: the lock is held and was
// repaired already, and Lock is not recursive. That nesting is real: a failed allocation inside
// find_or_construct (or a thread there that finds every cache slot taken) runs reclaim_dead,
// which needs the directory lock (issue 14 item 11).
class DirectoryLock {
 public:
  explicit DirectoryLock(Heap::Engine& e) noexcept : c_(e.c) {
    for (int i = 0; i < t_dir_depth; ++i)
      if (t_dir_held[i] == &c_) {
        held_ = true;
        return;
      }
    if (t_dir_depth == kMaxDirDepth || !e.lock_directory()) return;
    held_ = taken_ = true;
    t_dir_held[t_dir_depth++] = &c_;
  }
  ~DirectoryLock() {
    if (!taken_) return;
    --t_dir_depth;  // scopes end in reverse order of their start
    Heap::Engine::unlock(c_.dir_lock);
  }
  DirectoryLock(const DirectoryLock&) = delete;
  DirectoryLock& operator=(const DirectoryLock&) = delete;
  bool held() const noexcept { return held_; }
  void require() const {
    if (!held_)
      throw Error(Errc::not_recoverable, t_dir_depth == kMaxDirDepth
                                             ? "named object directory: named objects nested more than 8 deep"
                                             : "named object directory: its lock is not recoverable");
  }

 private:
  HeapControl& c_;
  bool held_ = false, taken_ = false;
};
}  // namespace

std::size_t Heap::reclaim_dead() noexcept {
  Engine e(*this);
  std::size_t n = 0;
  u64 me = my_thread_packed();
  for (auto& s : ctl_->caches) {
    u64 o = s.owner.load(std::memory_order_acquire);
    if (o == 0 || o == me || packed_alive(o)) continue;
    // acq_rel: claims the dead slot for reclaiming (a second reclaimer's CAS fails).
    if (!s.owner.compare_exchange_strong(o, me, std::memory_order_acq_rel)) continue;
    e.reclaim_slot(&s);
    ++n;
  }
  for (int i = 0; i < kOwners; ++i) {
    u64 o = ctl_->owners[i].owner.load(std::memory_order_acquire);
    if (o == 0 || packed_alive(o)) continue;
    // The dir lock first: its repair may still free or keep a constructing object of that owner.
    DirectoryLock dir(e);
    if (!dir.held()) continue;
    if (!e.lock_arena()) continue;
    std::unordered_set<u64> pendings;  // settled by reclaim_slot, not here
    for (auto& s : ctl_->caches) {
      u64 pp = s.pending.load(std::memory_order_acquire);
      if (pp != 0) pendings.insert(pp);
    }
    std::vector<u64> victims;
    const u64 top = e.limit();
    for (u64 ch = arena_begin_; e.readable(ch, top);) {
      u64 w = e.word(ch).load(std::memory_order_acquire);
      u64 sz = word_size(w);
      if (!e.word_check_ok(ch, w) || sz < kMinChunk || sz > top - ch) break;  // verify() reports it
      if (word_state(w) == st_owned && word_owner(w) == static_cast<u64>(i) && !pendings.count(ch))
        victims.push_back(ch);
      ch += sz;
    }
    for (u64 ch : victims) {
      Engine::Tx<kArenaLogEntries> tx(e, ctl_->arena_log, op_free, ch);
      u64 w = e.word(ch).load(std::memory_order_acquire);
      if (word_state(w) != st_owned || word_owner(w) != static_cast<u64>(i)) {
        tx.commit();
        continue;
      }
      // acq_rel: races with a live process freeing the same block (deallocate's CAS).
      if (!e.word(ch).compare_exchange_strong(w, e.make_word(ch, word_size(w), st_used), std::memory_order_acq_rel)) {
        tx.commit();
        continue;
      }
      e.arena_free(tx, ch);
      tx.commit();
      ctl_->owned_reclaimed.fetch_add(1, std::memory_order_relaxed);
      ++n;
    }
    Engine::unlock(ctl_->arena_lock);
    // acq_rel: frees the entry only if nobody re-claimed it meanwhile.
    ctl_->owners[i].owner.compare_exchange_strong(o, 0, std::memory_order_acq_rel);
  }
  return n;
}

// ---- named objects ----
namespace {
// The directory table, checked before use (issue 10): dir_table must be the user memory of a
// live (used) chunk of the arena, 64-aligned as named_get allocates it, and dir_capacity entries
// must fit in that chunk. Returns nullptr with cap 0 when there is no table, and nullptr with
// `bad` set when the two words do not describe one (a damaged segment).
DirEntry* dir_entries(Heap::Engine& e, u64& cap, bool& bad) noexcept {
  const HeapControl& c = e.c;
  u64 t = c.dir_table.load(std::memory_order_acquire);
  cap = c.dir_capacity.load(std::memory_order_acquire);
  bad = false;
  if (t == 0) {
    bad = cap != 0;
    cap = 0;
    return nullptr;
  }
  const u64 ch = t - kHeaderSize;
  bool ok = t % 64 == 0 && t >= kHeaderSize && e.valid_chunk(ch) && cap != 0;
  if (ok) {
    u64 w = e.word(ch).load(std::memory_order_acquire);
    ok = word_state(w) == st_used && cap <= (word_size(w) - kHeaderSize) / sizeof(DirEntry);
  }
  if (!ok) {
    bad = true;
    cap = 0;
    return nullptr;
  }
  return reinterpret_cast<DirEntry*>(e.base + t);  // cast-align: t % 64 == 0 (checked above)
}
[[noreturn]] void throw_bad_directory(const Heap& h) {
  const HeapControl& c = *h.control();
  throw Error(Errc::corrupt, "named-object directory of segment " + h.segment_name() +
                                 " is damaged (table offset " +
                                 std::to_string(c.dir_table.load(std::memory_order_relaxed)) + ", capacity " +
                                 std::to_string(c.dir_capacity.load(std::memory_order_relaxed)) +
                                 " do not describe a live block); run `shmkit verify` on it");
}
}  // namespace

// Dir lock held, previous owner dead: undo a torn table swap, then settle entries that were being
// constructed or destroyed (their objects are freed: a half-built object is never published).
void Heap::repair_directory() noexcept {
  Engine e(*this);
  e.rollback(ctl_->dir_log);
  ctl_->dir_log.op.store(op_none, std::memory_order_relaxed);
  ctl_->dir_old_table.store(0, std::memory_order_relaxed);  // (a torn swap leaks the old table)
  u64 cap = 0;
  bool bad = false;
  DirEntry* t = dir_entries(e, cap, bad);  // a damaged table is left alone (verify reports it)
  for (u64 i = 0; t != nullptr && i < cap; ++i) {
    DirEntry& d = t[i];
    u64 st = d.state.load(std::memory_order_acquire);
    if (st != dir_constructing && st != dir_destroying) continue;
    u64 ch = d.object - kHeaderSize;
    if (d.object >= kHeaderSize && e.valid_chunk(ch)) {
      u64 w = e.word(ch).load(std::memory_order_acquire);
      // Free it if it is still the entry's object: owned by the constructing process (a death before
      // disown; the owned-block CAS in deallocate decides against reclaim_dead) or shared.
      if ((word_state(w) == st_owned && word_owner(w) == d.owner_idx) || word_state(w) == st_used)
        (void)deallocate(base_ + d.object);
    }
    d.state.store(dir_empty, std::memory_order_release);
  }
}

void* Heap::named_get(std::string_view name, std::size_t size, std::size_t align, std::uint64_t type,
                      ConstructFn construct, void* ctx) {
  if (name.empty() || name.size() > kMaxName)
    throw Error(Errc::invalid_argument, "named object: a name must have 1.." + std::to_string(kMaxName) +
                                            " characters, got " + std::to_string(name.size()));
  Engine e(*this);
  DirectoryLock dir(e);
  dir.require();
  u64 cap = 0;
  bool bad = false;
  DirEntry* t = dir_entries(e, cap, bad);
  if (bad) throw_bad_directory(*this);
  DirEntry* empty = nullptr;
  for (u64 i = 0; t != nullptr && i < cap; ++i) {
    DirEntry& d = t[i];
    u64 st = d.state.load(std::memory_order_acquire);
    if (st == dir_empty) {
      if (empty == nullptr) empty = &d;
      continue;
    }
    if (st != dir_ready || d.name_len != name.size() || std::memcmp(d.name, name.data(), name.size()) != 0)
      continue;
    if (d.size != size || d.type != type)
      throw Error(Errc::invalid_argument,
                  "named object '" + std::string(name) + "' exists with another type (size " +
                      std::to_string(d.size) + ", type hash " + std::to_string(d.type) + "; asked for size " +
                      std::to_string(size) + ", type hash " + std::to_string(type) + ")");
    void* obj = pointer_at_checked(d.object, size);
    if (obj == nullptr) throw Error(Errc::corrupt, "named object '" + std::string(name) + "': offset out of range");
    return obj;
  }
  if (construct == nullptr) return nullptr;
  if (empty == nullptr) {
    // Grow the table: new one (owned until published: a death before the swap frees it through
    // reclaim_dead), copy, swap in one logged transaction that also disowns the new table.
    u64 ncap = cap == 0 ? 32 : cap * 2;
    void* nt = allocate_owned(ncap * sizeof(DirEntry), 64);
    if (nt == nullptr) throw Error(Errc::out_of_memory, "named object directory: out of memory");
    std::memset(nt, 0, ncap * sizeof(DirEntry));
    if (t != nullptr) std::memcpy(nt, t, cap * sizeof(DirEntry));
    u64 nt_off = e.off_of(nt), nch = nt_off - kHeaderSize;
    u64 old = ctl_->dir_table.load(std::memory_order_relaxed);
    {
      Engine::Tx<kDirLogEntries> tx(e, ctl_->dir_log);
      u64 w = e.word(nch).load(std::memory_order_relaxed);
      tx.set(e.word(nch), e.make_word(nch, word_size(w), st_used));
      tx.set(ctl_->dir_table, nt_off);
      tx.set(ctl_->dir_capacity, ncap);
      tx.commit();
    }
    if (old != 0) (void)deallocate(base_ + old);
    t = static_cast<DirEntry*>(nt);
    empty = &t[cap];
  }
  void* obj = allocate_owned(size, std::max<std::size_t>(align, 16));
  if (obj == nullptr) throw Error(Errc::out_of_memory, "named object '" + std::string(name) + "': out of memory");
  u64 obj_off = e.off_of(obj), och = obj_off - kHeaderSize;
  empty->object = obj_off;
  empty->size = size;
  empty->type = type;
  empty->owner_idx = word_owner(e.word(och).load(std::memory_order_relaxed));
  empty->name_len = static_cast<u32>(name.size());
  std::memcpy(empty->name, name.data(), name.size());
  empty->name[name.size()] = '\0';
  empty->state.store(dir_constructing, std::memory_order_release);  // after the fields above
  try {
    construct(obj, ctx);
  } catch (...) {
    (void)deallocate(obj);
    empty->state.store(dir_empty, std::memory_order_release);
    throw;
  }
  // Disown, then publish (a death in between: the repairer frees the shared, unpublished object).
  u64 w = e.word(och).load(std::memory_order_relaxed);
  // acq_rel: the owned-block CAS protocol (see deallocate).
  if (!e.word(och).compare_exchange_strong(w, e.make_word(och, word_size(w), st_used), std::memory_order_acq_rel))
    throw Error(Errc::corrupt, "named object '" + std::string(name) + "': its block changed state while constructing");
  empty->state.store(dir_ready, std::memory_order_release);
  return obj;
}

void* Heap::pointer_at_checked(std::uint64_t off, std::size_t len) const noexcept {
  const u64 top = Engine(const_cast<Heap&>(*this)).limit();
  if (off < arena_begin_ || off > top || len > top - off) return nullptr;
  return base_ + off;
}

bool Heap::named_destroy(std::string_view name, std::size_t size, std::uint64_t type, DestroyFn destroy_fn) {
  Engine e(*this);
  DirectoryLock dir(e);
  dir.require();
  u64 cap = 0;
  bool bad = false;
  DirEntry* t = dir_entries(e, cap, bad);
  if (bad) throw_bad_directory(*this);
  for (u64 i = 0; t != nullptr && i < cap; ++i) {
    DirEntry& d = t[i];
    if (d.state.load(std::memory_order_acquire) != dir_ready || d.name_len != name.size() ||
        std::memcmp(d.name, name.data(), name.size()) != 0)
      continue;
    if (d.size != size || d.type != type)
      throw Error(Errc::invalid_argument, "named object '" + std::string(name) + "' exists with another type");
    void* obj = pointer_at_checked(d.object, size);
    if (obj == nullptr) throw Error(Errc::corrupt, "named object '" + std::string(name) + "': offset out of range");
    d.state.store(dir_destroying, std::memory_order_release);
    destroy_fn(obj);
    // Unpublish before freeing: a death between the two leaks the block rather than freeing twice.
    d.state.store(dir_empty, std::memory_order_release);
    (void)deallocate(obj);
    return true;
  }
  return false;
}

std::vector<std::string> Heap::names() {
  Engine e(*this);
  DirectoryLock dir(e);
  dir.require();
  std::vector<std::string> out;
  u64 cap = 0;
  bool bad = false;
  DirEntry* t = dir_entries(e, cap, bad);
  for (u64 i = 0; t != nullptr && i < cap; ++i)
    if (t[i].state.load(std::memory_order_acquire) == dir_ready)
      out.emplace_back(t[i].name, std::min<std::size_t>(t[i].name_len, kMaxName));
  if (bad) throw_bad_directory(*this);
  return out;
}

// ---- verify and stats ----
namespace {
struct Walk {
  std::vector<VerifyFinding>* findings;
  void add(u64 off, std::string msg) {
    if (findings != nullptr && findings->size() < 1000) findings->push_back({off, std::move(msg)});
  }
};
}  // namespace

// Takes every class lock and the arena lock (in the lock order), walks everything, releases.
static void walk_heap(Heap& heap, Heap::Engine& e, std::vector<VerifyFinding>* findings, HeapStats* st, bool live) {
  HeapControl& c = *heap.control();
  Walk wk{findings};
  int locked_classes = 0;
  for (; locked_classes < kClasses; ++locked_classes)
    if (!e.lock_class(locked_classes)) {
      wk.add(0, "class " + std::to_string(locked_classes) + " lock is not recoverable");
      break;
    }
  bool arena_ok = e.lock_arena();
  if (!arena_ok) wk.add(0, "arena lock is not recoverable");

  const u64 begin = e.arena_begin(), top = c.top.load(std::memory_order_relaxed);
  const u64 seg_size = e.seg_size();
  // The control block's identity and bounds, against what this process read at attach (INVARIANT8).
  if (c.magic != kHeapMagic || c.version != kHeapVersion || c.control_size != sizeof(HeapControl))
    wk.add(e.off_of(&c), "heap control block overwritten: magic, version or size changed since attach");
  if (c.arena_begin != begin)
    wk.add(e.off_of(&c), "heap control block overwritten: arena begin " + std::to_string(c.arena_begin) +
                             " but it was " + std::to_string(begin) + " at attach");
  if (top < begin || top > seg_size || top % 16 != 0)
    wk.add(0, "arena top " + std::to_string(top) + " outside [arena begin, segment size] or misaligned");
  if (c.arena_log.count.load(std::memory_order_relaxed) != 0) wk.add(0, "arena undo log not empty under the lock");
  std::unordered_map<u64, u64> free_chunks, cached_chunks;  // offset -> size
  HeapStats s;
  s.arena_begin = begin;
  s.arena_end = top;
  s.high_water = c.high_water.load(std::memory_order_relaxed);
  s.segment_size = seg_size;
  s.segment_capacity = e.capacity();
  bool prev_free = false;
  u64 prev_size = 0;
  u64 ch = begin;
  while (ch < top && ch + kHeaderSize <= seg_size) {
    u64 w = e.word(ch).load(std::memory_order_acquire);
    u64 sz = word_size(w);
    if (!e.word_check_ok(ch, w) || sz < kMinChunk || ch + sz > top) {
      wk.add(ch, "chunk header invalid (word " + std::to_string(w) + "): walk stops here");
      break;
    }
    u64 pf = e.prev_free(ch).load(std::memory_order_relaxed);
    u64 expect = e.boundary_tag(ch, prev_free ? prev_size : 0);
    if (pf != expect)
      wk.add(ch, "boundary tag " + std::to_string(pf) + " should be " + std::to_string(expect));
    u64 state = word_state(w);
    switch (state) {
      case st_free:
        if (prev_free) wk.add(ch, "two adjacent free chunks (not coalesced)");
        free_chunks[ch] = sz;
        s.free_chunks++;
        s.bytes_free += sz;
        s.largest_free = std::max(s.largest_free, sz);
        break;
      case st_used:
      case st_owned:
        s.bytes_in_use += sz;
        s.blocks_in_use++;
        if (state == st_owned) {
          s.bytes_owned += sz;
          if (c.owners[word_owner(w)].owner.load(std::memory_order_relaxed) == 0)
            wk.add(ch, "owned block names a free owner entry " + std::to_string(word_owner(w)));
        }
        if (sz <= kSmallMax) s.class_in_use[class_of_size(sz)]++;
        break;
      case st_cached:
        if (sz > kSmallMax) wk.add(ch, "cached chunk larger than the largest class");
        else s.class_cached[class_of_size(sz)]++;
        cached_chunks[ch] = sz;
        s.bytes_cached += sz;
        s.bytes_free += sz;
        break;
      default:
        wk.add(ch, "chunk in unknown state " + std::to_string(state));
    }
    prev_free = state == st_free;
    prev_size = sz;
    ch += sz;
  }
  if (ch == top && prev_free) wk.add(top, "the chunk before top is free (should have been merged into top)");
  if (top <= seg_size) {
    s.bytes_free += seg_size - top;
    s.largest_free = std::max(s.largest_free, seg_size - top);
  }
  // bins
  std::unordered_set<u64> seen;
  for (int i = 0; i < kBins; ++i) {
    u64 head = c.bin_head[i].load(std::memory_order_relaxed);
    bool bit = (c.bitmap[i / 64].load(std::memory_order_relaxed) >> (i % 64)) & 1;
    if (bit != (head != 0)) wk.add(0, "bin " + std::to_string(i) + " bitmap bit disagrees with its list");
    u64 pv = 0;
    for (u64 n = head, steps = 0; n != 0; ++steps) {
      auto it = free_chunks.find(n);
      if (it == free_chunks.end()) {
        wk.add(n, "bin " + std::to_string(i) + " links a chunk that is not a free chunk");
        break;
      }
      if (!seen.insert(n).second) {
        wk.add(n, "free chunk on two lists or a cycle in bin " + std::to_string(i));
        break;
      }
      if (Heap::Engine::bin_index(it->second) != i) wk.add(n, "free chunk in the wrong bin");
      if (e.prev(n).load(std::memory_order_relaxed) != pv) wk.add(n, "free list back link wrong");
      pv = n;
      n = e.next(n).load(std::memory_order_relaxed);
    }
  }
  for (auto& [off, sz] : free_chunks)
    if (!seen.count(off)) wk.add(off, "free chunk of " + std::to_string(sz) + " bytes is on no bin list (lost)");
  // central lists and caches
  std::unordered_set<u64> pendings;
  for (int i = 0; i < kCacheSlots; ++i) {
    u64 p = c.caches[i].pending.load(std::memory_order_acquire);
    if (p == 0) continue;
    pendings.insert(p);
    // The chunk a cache owner was moving is always a chunk of the walk (cached, used or owned).
    if (!e.valid_chunk(p))
      wk.add(p, "cache " + std::to_string(i) + ": pending chunk " + std::to_string(p) + " is not a chunk");
  }
  auto walk_list = [&](u64 head, int k, const std::string& what, u64 expect_count, bool check_count) -> u64 {
    u64 n = head, cnt = 0;
    while (n != 0) {
      auto it = cached_chunks.find(n);
      if (it == cached_chunks.end()) {
        if (!pendings.count(n)) wk.add(n, what + " links a chunk that is not cached");
        break;
      }
      if (!seen.insert(n).second) {
        wk.add(n, what + ": chunk on two lists or a cycle (handed out twice)");
        break;
      }
      if (it->second != class_size(k)) wk.add(n, what + ": chunk of the wrong size class");
      ++cnt;
      n = e.next(n).load(std::memory_order_relaxed);
    }
    if (check_count && cnt != expect_count)
      wk.add(0, what + ": count " + std::to_string(expect_count) + " but " + std::to_string(cnt) + " chunks");
    return cnt;
  };
  for (int k = 0; k < kClasses; ++k) {
    const auto& cc = c.classes[k];
    if (cc.log.count.load(std::memory_order_relaxed) != 0) wk.add(0, "class " + std::to_string(k) + " undo log not empty");
    u64 total = 0;
    const std::string what = "central list " + std::to_string(k);
    for (u64 b = cc.head.load(std::memory_order_relaxed), batches = 0; b != 0; ++batches) {
      if (!cached_chunks.count(b) || seen.count(b)) {
        wk.add(b, what + ": batch head is not a cached chunk, or is on another list");
        break;
      }
      u64 meta = e.batch_meta(b).load(std::memory_order_relaxed);
      total += walk_list(b, k, what, meta >> Heap::Engine::kBatchLenShift, true);
      b = meta & Heap::Engine::kBatchNextMask;
    }
    if (total != cc.count.load(std::memory_order_relaxed))
      wk.add(0, what + ": count " + std::to_string(cc.count.load(std::memory_order_relaxed)) + " but " +
                    std::to_string(total) + " chunks");
  }
  // live: caches of other live threads change under our feet (they need no lock); follow their
  // lists quietly and do not count chunks that may be in flight as lost.
  bool live_foreign = false;
  const u64 me = my_thread_packed();
  auto quiet_walk = [&](u64 n) {
    for (u64 steps = 0; n != 0 && steps < cached_chunks.size(); ++steps) {
      if (!cached_chunks.count(n) || !seen.insert(n).second) break;
      n = e.next(n).load(std::memory_order_relaxed);
    }
  };
  for (int i = 0; i < kCacheSlots; ++i) {
    const auto& slot = c.caches[i];
    const u64 owner = slot.owner.load(std::memory_order_acquire);
    if (live && owner != 0 && owner != me && packed_alive(owner)) {
      live_foreign = true;
      s.caches_in_use++;
      for (int k = 0; k < kClasses; ++k) quiet_walk(slot.bins[k].head.load(std::memory_order_acquire));
      continue;
    }
    if (owner == 0) {
      for (int k = 0; k < kClasses; ++k)
        if (slot.bins[k].head.load(std::memory_order_relaxed) != 0)
          wk.add(0, "free cache slot " + std::to_string(i) + " still holds chunks");
      continue;
    }
    s.caches_in_use++;
    for (int k = 0; k < kClasses; ++k)
      walk_list(slot.bins[k].head.load(std::memory_order_relaxed), k,
                "cache " + std::to_string(i) + " bin " + std::to_string(k),
                slot.bins[k].count.load(std::memory_order_relaxed), slot.pending.load(std::memory_order_relaxed) == 0);
  }
  for (auto& [off, sz] : cached_chunks)
    if (!live_foreign && !seen.count(off) && !pendings.count(off))
      wk.add(off, "cached chunk of " + std::to_string(sz) + " bytes is on no list (lost)");

  if (arena_ok) Heap::Engine::unlock(c.arena_lock);
  for (int k = locked_classes; k-- > 0;) Heap::Engine::unlock(c.classes[k].lock);

  s.fragmentation = s.bytes_free == 0 ? 0.0 : 1.0 - static_cast<double>(s.largest_free) / static_cast<double>(s.bytes_free);
  s.repairs = c.repairs.load(std::memory_order_relaxed);
  s.caches_reclaimed = c.caches_reclaimed.load(std::memory_order_relaxed);
  s.owned_reclaimed = c.owned_reclaimed.load(std::memory_order_relaxed);
  s.errors = c.errors.load(std::memory_order_relaxed);
  for (int k = 0; k < kClasses; ++k) s.class_chunk_size[k] = class_size(k);
  if (st != nullptr) *st = s;
}

std::vector<VerifyFinding> Heap::verify(VerifyMode mode) {
  Engine e(*this);
  std::vector<VerifyFinding> f;
  walk_heap(*this, e, &f, nullptr, mode == VerifyMode::live);
  // directory
  if (DirectoryLock dir(e); dir.held()) {
    u64 cap = 0;
    bool bad = false;
    DirEntry* t = dir_entries(e, cap, bad);
    if (bad)
      f.push_back({ctl_->dir_table.load(std::memory_order_relaxed),
                   "named-object directory table (offset " + std::to_string(ctl_->dir_table.load(std::memory_order_relaxed)) +
                       ", capacity " + std::to_string(ctl_->dir_capacity.load(std::memory_order_relaxed)) +
                       ") is not a live block of the arena"});
    const u64 lim = e.limit();
    for (u64 i = 0; t != nullptr && i < cap; ++i) {
      if (t[i].state.load(std::memory_order_relaxed) != dir_ready) continue;
      // The name field may be unterminated: never read past it.
      const std::string nm(t[i].name, strnlen(t[i].name, sizeof t[i].name));
      const u64 obj = t[i].object;
      if (obj < arena_begin_ + kHeaderSize || obj >= lim || !owns(base_ + obj))
        f.push_back({obj, "named object '" + nm + "' is not a live block"});
    }
  } else {
    f.push_back({0, "named-object directory lock is not recoverable"});
  }
  return f;
}

HeapStats Heap::stats() {
  Engine e(*this);
  HeapStats s;
  walk_heap(*this, e, nullptr, &s, true);
  try {
    s.named_objects = names().size();
  } catch (const Error&) {
    s.named_objects = 0;  // a damaged directory: verify() reports it
  }
  return s;
}

// ---- allocator support ----
Heap& heap_detail::heap_for(const void* control) {
  thread_local Heap* last = nullptr;
  thread_local std::uint64_t last_gen = 0;
  std::uint64_t g = g_generation.load(std::memory_order_relaxed);
  if (last != nullptr && last_gen == g && last->control() == control) [[likely]] return *last;
  Heap* h = Heap::find_attached(control);
  if (h == nullptr || h->control() != control)
    throw Error(Errc::not_found,
                "shmkit::Allocator: no heap attached in this process at this address (call "
                "shmkit::Heap::attach(segment) first; Allocator<T> needs the segment mapped at home, "
                "use OffsetAllocator<T> in a relocated process)");
  last = h;
  last_gen = g;
  return *h;
}

void heap_detail::report_bad_free(HeapStatus s, const void* p) noexcept {
  log().error("shmkit heap: deallocate({}) refused: {}", p, to_string(s));
}

}  // namespace shmkit
