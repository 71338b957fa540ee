// The undo-log transaction (Tx: rule 1 of engine.hpp's crash-safety discipline), its rollback,
// and the heap's locks with their owner-death repair (roll back, then redo an interrupted free).
// Part of the Engine (engine.hpp), included at the end of engine.hpp: include that, not this file.
#pragma once

#include "engine.hpp"

namespace shmkit::heapimpl {

template <int N>
struct Engine::Tx {
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
inline void Engine::rollback(UndoLog<N>& log) noexcept {
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

template <class Repair>
inline bool Engine::lock(Lock& l, Repair&& repair) noexcept {
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

inline bool Engine::lock_arena() noexcept {
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
inline bool Engine::lock_class(int k) noexcept {
  return lock(c.classes[k].lock, [&] {
    if (lock_arena()) unlock(c.arena_lock);
    rollback(c.classes[k].log);
    c.classes[k].log.op.store(op_none, std::memory_order_relaxed);
  });
}

inline bool Engine::lock_directory() noexcept { return lock(c.dir_lock, [&] { h.repair_directory(); }); }

// Arena lock held: never waits (a waiting class lock under the arena lock could deadlock).
inline bool Engine::try_lock_class(int k) noexcept {
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

}  // namespace shmkit::heapimpl
