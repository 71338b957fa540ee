// Reclaim: gives back what dead threads and processes held — the caches of dead threads (through
// Engine::reclaim_slot) and the owned blocks of dead processes — under the directory lock (its
// repair settles a dead owner's half-constructed named object first) and the arena lock.
#include <unordered_set>
#include <vector>

#include "directory.hpp"

namespace shmkit {

using namespace heapimpl;

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

}  // namespace shmkit
