// verify() and stats(): one walk over every chunk, bin list, central list and cache, under every
// class lock and the arena lock (in the lock order), then the named-object directory.
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "directory.hpp"

namespace shmkit {

using namespace heapimpl;

namespace {
struct Walk {
  std::vector<VerifyFinding>* findings;
  void add(u64 off, std::string msg) {
    if (findings != nullptr && findings->size() < 1000) findings->push_back({off, std::move(msg)});
  }
};
}  // namespace

// Takes every class lock and the arena lock (in the lock order), walks everything, releases.
static void walk_heap(Heap& heap, Engine& e, std::vector<VerifyFinding>* findings, HeapStats* st, bool live) {
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
      if (Engine::bin_index(it->second) != i) wk.add(n, "free chunk in the wrong bin");
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
      total += walk_list(b, k, what, meta >> Engine::kBatchLenShift, true);
      b = meta & Engine::kBatchNextMask;
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

  if (arena_ok) Engine::unlock(c.arena_lock);
  for (int k = locked_classes; k-- > 0;) Engine::unlock(c.classes[k].lock);

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

}  // namespace shmkit
