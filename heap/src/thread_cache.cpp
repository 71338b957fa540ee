// The cache slots of this process's threads: claiming one (my_slot_slow, the slow path of
// Engine::my_slot in thread_cache.hpp), giving one back to the central lists (release_slot, at
// thread exit and at detach), and settling the slot of a dead thread (reclaim_slot, called by
// reclaim_dead). A slot is written without a lock only by its owner thread (cache_protocol.hpp).
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <utility>

#include "engine.hpp"
#include "shmkit/sys/syscall.hpp"

namespace shmkit {

using namespace heapimpl;

namespace {
// Gives this thread's slots back when the thread exits.
struct ThreadReaper {
  ~ThreadReaper();
};
thread_local ThreadReaper t_reaper;
}  // namespace

CacheSlot* Engine::my_slot_slow(std::uint64_t g) noexcept {
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
void Engine::release_slot(CacheSlot* s) noexcept {
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
void Engine::reclaim_slot(CacheSlot* s) noexcept {
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
        Engine eng(*hh);
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

}  // namespace shmkit
