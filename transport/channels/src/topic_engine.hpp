// Internal to the topic engine (topic*.cpp; not installed): TopicEngine — the undo-log
// transaction, sample references and their frees, slot liveness — Topic::Guard, and the crash
// tests' kill points. Invariants: topic_layout.hpp. Where each part is defined:
//   topic.cpp          open / find / list, sample lookup, to_string
//   topic_txn.cpp      the undo log, rollback and repair, sample references and frees
//   topic_slots.cpp    publisher/subscriber slots: claim, release, reclaim of the dead
//   topic_fanout.cpp   loan / publish / take / release (the 1:N fan-out)
//   topic_verify.cpp   verify and stats
//
// Exactly-once reclaim of a sample block. A block reaches the heap again along exactly one of:
//  * Heap::reclaim_dead(): the block is still owned (allocate_owned) by a dead publisher — it died
//    between loaning and disowning. The topic never frees an owned block of a dead process itself
//    while the heap may: before following a dead publisher's loan record (or a dead process's
//    unfinished frees), the repairer runs reclaim_dead() to completion (it holds the heap's
//    directory and arena locks while it frees, so a concurrent reclaim in another process is over
//    too), and then frees the block only if it is still alive and still carries the token the
//    record names. A freed block does not: the heap writes its free-list link over the token
//    (topic_layout.hpp), and a block the heap handed out again carries another token or none.
//  * the topic: a disowned sample whose refcount dropped to 0 (its last reference), a dead
//    publisher's disowned loan, a discarded loan. The transaction that drops the last reference
//    records (block, token) in frees[] before it commits; the frees run after the commit under the
//    same lock, and a repairer that finds frees_count > 0 finishes them with the token check above
//    (a free that had completed is not repeated).
#pragma once

#include <signal.h>

#include <atomic>
#include <cinttypes>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>

#include "shmkit/channels/topic.hpp"
#include "shmkit/heap/heap.hpp"
#include "shmkit/sys/log.hpp"

namespace shmkit {

// Every part of the engine is written in the layout's terms (topic_layout.hpp).
using namespace pubsub_detail;

namespace pubsub_detail {
// SIGKILLs this process at a crash test's chosen point (test_kill_point, topic.hpp).
inline void kill_point(int point) noexcept {
  // relaxed: a test sets it before the operation in the same thread.
  if (test_kill_point.load(std::memory_order_relaxed) == point) [[unlikely]] ::raise(SIGKILL);
}
// Throws Error(invalid_argument) naming the option when v is outside [lo, hi] (topic.cpp).
void check_range(const char* what, std::uint32_t v, std::uint32_t lo, std::uint32_t hi);
}  // namespace pubsub_detail

// The engine's private helpers (friend of Topic).
struct TopicEngine {
  Topic& t;
  TopicControl& c;
  std::byte* base;

  explicit TopicEngine(Topic& topic) noexcept : t(topic), c(*topic.ctl_), base(topic.heap_->base()) {}

  u64 off_of(const void* p) const noexcept { return static_cast<u64>(static_cast<const std::byte*>(p) - base); }

  // -- the undo log (INVARIANT6): set/add/commit here, the repair in topic_txn.cpp --
  // Records the old value, then writes. Only the lock holder calls it.
  void set(std::atomic<u64>& w, u64 v) noexcept {
    const u64 n = c.log_count.load(std::memory_order_relaxed);
    if (n >= kLogEntries) {
      // kLogEntries bounds the largest transaction (topic_layout.hpp); reaching it is a bug here.
      std::fprintf(stderr, "shmkit pubsub: transaction log overflow (%" PRIu64 " entries)\n", n);
      std::abort();
    }
    c.log[n] = UndoEntry{off_of(&w), w.load(std::memory_order_relaxed)};
    // release: the entry is in place before the count covers it, and (next store, release) the
    // count before the word changes; a repairer reads them after acquiring the lock from the dead
    // owner (the lock word's acquire pairs with these, and with the kernel's owner-died store).
    c.log_count.store(n + 1, std::memory_order_release);
    w.store(v, std::memory_order_release);
  }
  void add(std::atomic<u64>& w, std::int64_t d) noexcept {
    set(w, w.load(std::memory_order_relaxed) + static_cast<u64>(d));
  }
  // release: every logged write is done before the log is emptied (commit point).
  void commit() noexcept { c.log_count.store(0, std::memory_order_release); }

  bool word_ok(u64 off) const noexcept;
  // Repairer: undoes an uncommitted transaction, newest write first.
  void rollback() noexcept;

  // -- samples (topic_txn.cpp) --
  static u64 token_of(u64 serial, u64 ctl_off) noexcept {
    return kTokenTag | ((serial ^ (ctl_off << 12)) & ((u64{1} << 48) - 1));
  }
  // Drops one reference in the running transaction; the last one schedules the block's free.
  void decref(u64 s) noexcept;
  void schedule_free(u64 s, u64 token) noexcept;
  // After commit (or by a repairer): gives the scheduled blocks back to the heap. after_death: a
  // dead process may have left them half-done, or as owned blocks the heap reclaims (see the top
  // of this file).
  void finish_frees(bool after_death) noexcept;

  // -- slots: liveness here, drop / take over / reclaim in topic_slots.cpp --
  bool sub_in_use(u32 i) const noexcept { return c.subs[i].state.load(std::memory_order_relaxed) == 1; }
  bool pub_in_use(u32 i) const noexcept { return c.pubs[i].state.load(std::memory_order_relaxed) == 1; }
  // Depth of a subscriber's queue as shared memory says, checked (INVARIANT3); 0 when corrupt.
  u64 depth_of(const SubscriberSlot& s) const noexcept {
    const u64 d = s.depth.load(std::memory_order_relaxed);
    return d >= 1 && d <= kQueueSlots ? d : 0;
  }
  // A slot's owner is dead when its liveness lock says so: owner-died set by the kernel, or no
  // owner at all while the slot is in use. One load; no system call.
  static bool looks_dead(const Lock& alive) noexcept {
    const u32 w = alive.debug_word();
    return (w & locks_detail::kOwnerDied) != 0 || (w & locks_detail::kTidMask) == 0;
  }

  // Releases everything a subscriber holds (its queue and held samples) in the running transaction
  // and frees the slot.
  void drop_subscriber(SubscriberSlot& s) noexcept;
  // A dead publisher's loans are scheduled as frees (they are checked against their tokens after
  // reclaim_dead, see the top of this file), and the slot is freed.
  void drop_publisher(PublisherSlot& p) noexcept;

  // Takes over the liveness lock of a slot whose owner died; true when it did (the caller then
  // frees the slot and unlocks). would_block: the owner is alive.
  static bool take_over(Lock& alive) noexcept;

  // Lock held: reclaims every slot whose owner died. Returns how many.
  std::size_t reclaim_dead_slots() noexcept;

  // -- the topic lock (topic_txn.cpp) --
  // Lock held after owner_died (INVARIANT6).
  void repair() noexcept;
  PubSubStatus after_acquire(LockResult r) noexcept;
};

struct Topic::Guard {
  Topic& t;
  PubSubStatus status;
  explicit Guard(Topic& topic, Deadline deadline = kNoDeadline) noexcept : t(topic), status(topic.lock(deadline)) {}
  ~Guard() {
    if (status == PubSubStatus::ok) t.unlock();
  }
  bool ok() const noexcept { return status == PubSubStatus::ok; }
  // Unlocks before the scope ends (for the notifies that follow a change).
  void release() noexcept {
    if (status == PubSubStatus::ok) t.unlock();
    status = PubSubStatus::would_block;
  }
};

}  // namespace shmkit
