// The publish/subscribe engine: transactions on a TopicControl, repair after a death, reclaim of
// dead publishers and subscribers, verify and stats. Invariants: topic_layout.hpp.
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
#include <signal.h>

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>

#include "shmkit/channels/topic.hpp"
#include "shmkit/channels/waitset_layout.hpp"
#include "shmkit/heap/heap.hpp"
#include "shmkit/sys/log.hpp"
#include "shmkit/sys/process.hpp"

namespace shmkit {

using namespace pubsub_detail;

const char* to_string(BackPressure p) noexcept {
  switch (p) {
    case BackPressure::drop_oldest: return "drop_oldest";
    case BackPressure::block_publisher: return "block_publisher";
  }
  return "?";
}

const char* to_string(PubSubStatus s) noexcept {
  switch (s) {
    case PubSubStatus::ok: return "ok";
    case PubSubStatus::would_block: return "would_block";
    case PubSubStatus::timed_out: return "timed_out";
    case PubSubStatus::out_of_memory: return "out_of_memory";
    case PubSubStatus::too_many_loans: return "too_many_loans";
    case PubSubStatus::too_many_held: return "too_many_held";
    case PubSubStatus::invalid_argument: return "invalid_argument";
    case PubSubStatus::not_recoverable: return "not_recoverable";
    case PubSubStatus::corrupt: return "corrupt";
  }
  return "?";
}

namespace pubsub_detail {
std::atomic<int> test_kill_point{0};
namespace {
inline void kill_point(int point) noexcept {
  // relaxed: a test sets it before the operation in the same thread.
  if (test_kill_point.load(std::memory_order_relaxed) == point) [[unlikely]] ::raise(SIGKILL);
}
}  // namespace
TopicControl::TopicControl(const TopicInit& in) noexcept
    : magic(kTopicMagic),
      version(kTopicVersion),
      reserved0(0),
      type_hash(in.type_hash),
      type_size(in.type_size),
      max_subscribers(in.max_subscribers),
      max_publishers(in.max_publishers),
      history(in.history),
      queue_depth(in.queue_depth),
      max_held(in.max_held),
      max_loans(in.max_loans) {}
}  // namespace pubsub_detail

// The engine's private helpers (friend of Topic).
struct TopicEngine {
  Topic& t;
  TopicControl& c;
  std::byte* base;

  explicit TopicEngine(Topic& topic) noexcept : t(topic), c(*topic.ctl_), base(topic.heap_->base()) {}

  u64 off_of(const void* p) const noexcept { return static_cast<u64>(static_cast<const std::byte*>(p) - base); }

  // -- the undo log (INVARIANT6) --
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

  bool word_ok(u64 off) const noexcept {
    if (off % 8 != 0) return false;
    const u64 ctl = t.ctl_off_;
    if (off >= ctl && off + 8 <= ctl + sizeof(TopicControl)) return true;
    return t.header(off & ~u64{63}) != nullptr;  // a word of a sample header
  }
  // Repairer: undoes an uncommitted transaction, newest write first.
  void rollback() noexcept {
    u64 n = c.log_count.load(std::memory_order_acquire);
    if (n > kLogEntries) {
      log().error("pubsub topic '{}': undo log count {} out of range; ignoring the log", t.name_, n);
      n = 0;
    }
    for (u64 i = n; i-- > 0;) {
      const UndoEntry e = c.log[i];
      if (!word_ok(e.off)) {
        log().error("pubsub topic '{}': undo log entry {} names offset {:#x}, not a topic word", t.name_, i, e.off);
        continue;
      }
      reinterpret_cast<std::atomic<u64>*>(base + e.off)->store(e.old, std::memory_order_relaxed);
    }
    commit();
  }

  // -- samples --
  static u64 token_of(u64 serial, u64 ctl_off) noexcept {
    return kTokenTag | ((serial ^ (ctl_off << 12)) & ((u64{1} << 48) - 1));
  }
  // Drops one reference in the running transaction; the last one schedules the block's free.
  void decref(u64 s) noexcept {
    SampleHeader* h = t.header(s);
    if (h == nullptr) {
      log().error("pubsub topic '{}': a reference names {:#x}, not a sample; dropped", t.name_, s);
      return;
    }
    const u64 r = h->refcount.load(std::memory_order_relaxed);
    if (r == 0) {
      log().error("pubsub topic '{}': sample {:#x} has refcount 0 but is referenced", t.name_, s);
      return;
    }
    set(h->refcount, r - 1);
    if (r == 1) {
      add(c.live_samples, -1);
      schedule_free(s, h->token.load(std::memory_order_relaxed));
    }
  }
  void schedule_free(u64 s, u64 token) noexcept {
    const u64 n = c.frees_count.load(std::memory_order_relaxed);
    if (n >= kMaxFrees) {
      std::fprintf(stderr, "shmkit pubsub: too many frees in one transaction\n");
      std::abort();
    }
    set(c.frees[n], s);
    set(c.free_tokens[n], token);
    set(c.frees_count, n + 1);
    add(c.freed, 1);
  }
  // After commit (or by a repairer): gives the scheduled blocks back to the heap. after_death: a
  // dead process may have left them half-done, or as owned blocks the heap reclaims (see the top).
  void finish_frees(bool after_death) noexcept {
    u64 n = c.frees_count.load(std::memory_order_acquire);
    if (n == 0) return;
    if (n > kMaxFrees) n = kMaxFrees;
    if (after_death) (void)t.heap_->reclaim_dead();
    for (u64 i = 0; i < n; ++i) {
      const u64 s = c.frees[i].load(std::memory_order_relaxed);
      const u64 tok = c.free_tokens[i].load(std::memory_order_relaxed);
      SampleHeader* h = t.header(s);
      if (h == nullptr || h->token.load(std::memory_order_relaxed) != tok) continue;  // already freed
      // A published sample's payload is a constructed object: its destructor runs once (seq is
      // cleared first, so a repairer after a death inside it does not run it again).
      if (h->seq.exchange(0, std::memory_order_relaxed) != 0 && t.type_hash_ != 0)
        destroy_payload(t.type_hash_, t.payload(s));
      const HeapStatus st = t.heap_->deallocate(h);
      if (st != HeapStatus::ok)
        log().error("pubsub topic '{}': freeing sample {:#x}: {}", t.name_, s, to_string(st));
    }
    c.frees_count.store(0, std::memory_order_release);
  }

  // -- slots --
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
  void drop_subscriber(SubscriberSlot& s) noexcept {
    const u64 d = depth_of(s);
    const u64 head = s.head.load(std::memory_order_relaxed), tail = s.tail.load(std::memory_order_relaxed);
    if (d != 0 && head <= tail && tail - head <= d)
      for (u64 j = head; j < tail; ++j) decref(s.q[j % d].load(std::memory_order_relaxed));
    else
      log().error("pubsub topic '{}': a subscriber queue is corrupt (head {}, tail {}, depth {}); its references are dropped", t.name_, head, tail, d);
    set(s.head, tail);
    for (u32 k = 0; k < kMaxHeld; ++k) {
      const u64 h = s.held[k].load(std::memory_order_relaxed);
      if (h == 0) continue;
      decref(h);
      set(s.held[k], 0);
    }
    set(s.waitset, 0);
    set(s.state, 0);
  }
  // A dead publisher's loans are scheduled as frees (they are checked against their tokens after
  // reclaim_dead, see the top), and the slot is freed.
  void drop_publisher(PublisherSlot& p) noexcept {
    for (u32 k = 0; k < kMaxLoans; ++k) {
      const u64 s = p.loans[k].load(std::memory_order_acquire);
      if (s == 0) continue;
      schedule_free(s, p.loan_tokens[k].load(std::memory_order_relaxed));
      add(c.freed, -1);  // a loan was never published: counted as reclaimed, not freed
      add(c.reclaimed_loans, 1);
      set(p.loans[k], 0);
    }
    set(p.state, 0);
  }

  // Takes over the liveness lock of a slot whose owner died; true when it did (the caller then
  // frees the slot and unlocks). would_block: the owner is alive.
  static bool take_over(Lock& alive) noexcept {
    const LockResult r = alive.try_acquire();
    if (r == LockResult::owner_died) {
      alive.mark_consistent();
      return true;
    }
    if (r == LockResult::acquired) return true;  // in use but unowned: its claimant is gone
    return false;
  }

  // Lock held: reclaims every slot whose owner died. Returns how many.
  std::size_t reclaim_dead_slots() noexcept {
    std::size_t n = 0;
    // One protocol for both kinds of slot: take the dead owner's liveness lock, drop what the slot
    // holds in one transaction, finish its frees, then free the lock for the next claimant.
    auto reclaim = [&](auto& slot, const char* kind, u32 i, std::atomic<u64>& counter, auto drop) {
      if (slot.state.load(std::memory_order_relaxed) != 1 || !looks_dead(slot.alive) || !take_over(slot.alive))
        return;
      log().info("pubsub topic '{}': reclaiming {} {} of dead process {}", t.name_, kind, i,
                 slot.pid.load(std::memory_order_relaxed));
      drop(slot);
      add(counter, 1);
      commit();
      finish_frees(true);
      slot.alive.unlock();
      ++n;
    };
    for (u32 i = 0; i < kMaxSubscribers; ++i)
      reclaim(c.subs[i], "subscriber", i, c.reclaimed_subscribers, [&](SubscriberSlot& s) { drop_subscriber(s); });
    for (u32 i = 0; i < kMaxPublishers; ++i)
      reclaim(c.pubs[i], "publisher", i, c.reclaimed_publishers, [&](PublisherSlot& p) { drop_publisher(p); });
    if (n != 0) c.space.notify_all();  // a blocked publisher may have waited on a dead subscriber
    return n;
  }

  // Lock held after owner_died (INVARIANT6).
  void repair() noexcept {
    rollback();
    finish_frees(true);
  }

  PubSubStatus after_acquire(LockResult r) noexcept {
    switch (r) {
      case LockResult::acquired: return PubSubStatus::ok;
      case LockResult::owner_died:
        log().info("pubsub topic '{}': the topic lock's owner died; repairing", t.name_);
        repair();
        c.lock.mark_consistent();
        return PubSubStatus::ok;
      case LockResult::timed_out: return PubSubStatus::timed_out;
      case LockResult::would_block: return PubSubStatus::would_block;
      case LockResult::not_recoverable: return PubSubStatus::not_recoverable;
    }
    return PubSubStatus::corrupt;
  }
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

PubSubStatus Topic::lock(Deadline deadline) noexcept {
  return TopicEngine(*this).after_acquire(ctl_->lock.acquire(deadline));
}
void Topic::unlock() noexcept { ctl_->lock.unlock(); }

// ---- open / find / list ----

Topic::Topic(Heap& heap, TopicControl* ctl, std::string name)
    : heap_(&heap), ctl_(ctl), name_(std::move(name)) {
  ctl_off_ = static_cast<u64>(reinterpret_cast<std::byte*>(ctl) - heap.base());
  auto bad = [&](const std::string& what) {
    throw Error(Errc::corrupt, "pubsub topic '" + name_ + "': " + what);
  };
  if (ctl->magic != kTopicMagic) bad("the named object is not a topic (bad magic)");
  if (ctl->version != kTopicVersion)
    throw Error(Errc::version_mismatch, "pubsub topic '" + name_ + "': layout version " +
                                            std::to_string(ctl->version) + ", this build reads " +
                                            std::to_string(kTopicVersion));
  // Local copies, checked once: later uses never re-read the configuration from shared memory.
  max_subs_ = ctl->max_subscribers;
  max_pubs_ = ctl->max_publishers;
  history_ = ctl->history;
  depth_ = ctl->queue_depth;
  max_held_ = ctl->max_held;
  max_loans_ = ctl->max_loans;
  type_hash_ = ctl->type_hash;
  if (max_subs_ < 1 || max_subs_ > kMaxSubscribers || max_pubs_ < 1 || max_pubs_ > kMaxPublishers ||
      history_ > kMaxHistory || depth_ < 1 || depth_ > kQueueSlots || max_held_ < 1 || max_held_ > kMaxHeld ||
      max_loans_ < 1 || max_loans_ > kMaxLoans)
    bad("its configuration is out of range");
}

namespace {
std::string full_name(std::string_view name) {
  if (name.empty()) throw Error(Errc::invalid_argument, "pubsub: a topic name must not be empty");
  constexpr std::size_t kMaxName = 83;  // the heap's named-object limit
  if (Topic::kPrefix.size() + name.size() > kMaxName)
    throw Error(Errc::invalid_argument, "pubsub topic '" + std::string(name) + "': the name is longer than " +
                                            std::to_string(kMaxName - Topic::kPrefix.size()) + " bytes");
  return std::string(Topic::kPrefix) + std::string(name);
}
void check_range(const char* what, std::uint32_t v, std::uint32_t lo, std::uint32_t hi) {
  if (v < lo || v > hi)
    throw Error(Errc::invalid_argument, std::string("pubsub TopicOptions::") + what + " = " + std::to_string(v) +
                                            " is outside [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
}
}  // namespace

Topic Topic::open(Heap& heap, std::string_view name, const TopicOptions& o, std::uint64_t type_hash,
                  std::uint64_t type_size) {
  const std::string full = full_name(name);
  check_range("max_subscribers", o.max_subscribers, 1, kMaxSubscribers);
  check_range("max_publishers", o.max_publishers, 1, kMaxPublishers);
  check_range("history", o.history, 0, kMaxHistory);
  check_range("queue_depth", o.queue_depth, 1, kQueueSlots);
  check_range("max_held", o.max_held, 1, kMaxHeld);
  check_range("max_loans", o.max_loans, 1, kMaxLoans);
  TopicInit init{type_hash, type_size, o.max_subscribers, o.max_publishers, o.history, o.queue_depth,
                 o.max_held, o.max_loans};
  auto* ctl = heap.find_or_construct<TopicControl>(full, init);
  Topic t(heap, ctl, std::string(name));
  if (type_hash != 0) t.type_hash_ = type_hash;  // this handle's type runs the destructor
  t.waitsets_ = heap.find_or_construct<WaitSetTable>(kWaitSetTableName);
  if (t.waitsets_->magic != kWaitSetMagic)
    throw Error(Errc::corrupt, "pubsub: the named object " + std::string(kWaitSetTableName) + " is not a WaitSet table");
  if (type_hash != 0 && ctl->type_hash != 0 && (ctl->type_hash != type_hash || ctl->type_size != type_size))
    throw Error(Errc::invalid_argument, "pubsub topic '" + std::string(name) +
                                            "': it carries samples of another type (" +
                                            std::to_string(ctl->type_size) + " bytes) than this handle's (" +
                                            std::to_string(type_size) + " bytes)");
  return t;
}

Topic Topic::find(Heap& heap, std::string_view name) {
  auto* ctl = heap.find<TopicControl>(full_name(name));
  if (ctl == nullptr) return Topic();
  return Topic(heap, ctl, std::string(name));
}

std::vector<std::string> Topic::list(Heap& heap) {
  std::vector<std::string> out;
  for (auto& n : heap.names())
    if (n.rfind(kPrefix, 0) == 0) out.push_back(n.substr(kPrefix.size()));
  return out;
}

// ---- samples ----

SampleHeader* Topic::header(std::uint64_t s) const noexcept {
  if (s == 0 || s % 64 != 0) return nullptr;
  std::byte* p = heap_->base() + s;
  if (heap_->usable_size(p) < sizeof(SampleHeader)) return nullptr;  // not a live heap block
  auto* h = reinterpret_cast<SampleHeader*>(p);
  if ((h->token.load(std::memory_order_relaxed) & (u64{0xFF} << 56)) != kTokenTag ||
      h->topic.load(std::memory_order_relaxed) != ctl_off_)
    return nullptr;
  return h;
}
std::byte* Topic::payload(std::uint64_t s) const noexcept { return heap_->base() + s + sizeof(SampleHeader); }

bool Topic::has_data(int sub) const noexcept {
  const SubscriberSlot& s = ctl_->subs[sub];
  return s.head.load(std::memory_order_acquire) != s.tail.load(std::memory_order_acquire);
}

// ---- slots ----

int Topic::claim_publisher() {
  Guard g(*this);
  if (!g.ok()) throw Error(Errc::not_recoverable, "pubsub topic '" + name_ + "': " + to_string(g.status));
  TopicEngine e(*this);
  e.reclaim_dead_slots();
  for (u32 i = 0; i < max_pubs_; ++i) {
    PublisherSlot& p = ctl_->pubs[i];
    if (e.pub_in_use(i) || !TopicEngine::take_over(p.alive)) continue;
    const sys::ProcessIdentity me = sys::this_process();
    e.set(p.pid, static_cast<u64>(me.pid));
    e.set(p.start_time, me.start_time);
    e.set(p.published, 0);
    for (u32 k = 0; k < kMaxLoans; ++k) e.set(p.loans[k], 0);
    e.set(p.state, 1);
    e.commit();
    return static_cast<int>(i);  // the liveness lock stays held by this thread (INVARIANT5)
  }
  throw Error(Errc::out_of_memory, "pubsub topic '" + name_ + "': all " + std::to_string(max_pubs_) +
                                       " publisher slots are in use (TopicOptions::max_publishers)");
}

int Topic::claim_subscriber(BackPressure policy, std::uint32_t depth, bool want_history) {
  if (policy != BackPressure::drop_oldest && policy != BackPressure::block_publisher)
    throw Error(Errc::invalid_argument, "pubsub: unknown BackPressure value");
  if (depth == 0) depth = depth_;
  check_range("queue_depth (SubscriberOptions)", depth, 1, kQueueSlots);
  Guard g(*this);
  if (!g.ok()) throw Error(Errc::not_recoverable, "pubsub topic '" + name_ + "': " + to_string(g.status));
  TopicEngine e(*this);
  e.reclaim_dead_slots();
  for (u32 i = 0; i < max_subs_; ++i) {
    SubscriberSlot& s = ctl_->subs[i];
    if (e.sub_in_use(i) || !TopicEngine::take_over(s.alive)) continue;
    const sys::ProcessIdentity me = sys::this_process();
    e.set(s.pid, static_cast<u64>(me.pid));
    e.set(s.start_time, me.start_time);
    e.set(s.policy, static_cast<u64>(policy));
    e.set(s.depth, depth);
    e.set(s.received, 0);
    e.set(s.dropped, 0);
    e.set(s.waitset, 0);
    for (u32 k = 0; k < kMaxHeld; ++k) e.set(s.held[k], 0);
    u64 tail = 0;
    if (want_history && history_ > 0) {
      // The last min(K, depth) samples of the history, oldest first (INVARIANT3, 4).
      const u64 hc = std::min<u64>(ctl_->hist_count.load(std::memory_order_relaxed), history_);
      const u64 hh = ctl_->hist_head.load(std::memory_order_relaxed) % history_;
      for (u64 j = hc > depth ? hc - depth : 0; j < hc; ++j) {
        const u64 smp = ctl_->hist[(hh + j) % history_].load(std::memory_order_relaxed);
        SampleHeader* h = header(smp);
        if (h == nullptr) continue;
        e.add(h->refcount, 1);
        e.set(s.q[tail % depth], smp);
        ++tail;
      }
    }
    e.set(s.head, 0);
    e.set(s.tail, tail);
    e.set(s.state, 1);
    e.commit();
    return static_cast<int>(i);
  }
  throw Error(Errc::out_of_memory, "pubsub topic '" + name_ + "': all " + std::to_string(max_subs_) +
                                       " subscriber slots are in use (TopicOptions::max_subscribers)");
}

void Topic::release_publisher(int slot) noexcept {
  // Only the owner thread releases (a forked child's copy of the handle does not own the slot).
  if (!ctl_->pubs[slot].alive.held_by_this_thread()) return;
  Guard g(*this);
  if (!g.ok()) return;  // the topic is unusable; its slots are reclaimed with it
  TopicEngine e(*this);
  PublisherSlot& p = ctl_->pubs[slot];
  e.drop_publisher(p);
  e.commit();
  e.finish_frees(false);
  p.alive.unlock();
}

void Topic::release_subscriber(int slot) noexcept {
  if (!ctl_->subs[slot].alive.held_by_this_thread()) return;
  Guard g(*this);
  if (!g.ok()) return;
  TopicEngine e(*this);
  SubscriberSlot& s = ctl_->subs[slot];
  const bool was_full = s.tail.load(std::memory_order_relaxed) - s.head.load(std::memory_order_relaxed) >= e.depth_of(s);
  e.drop_subscriber(s);
  e.commit();
  e.finish_frees(false);
  s.alive.unlock();
  g.release();
  if (was_full) ctl_->space.notify_all();
}

// ---- loan / publish ----

std::uint64_t Topic::loan(int pub, std::size_t bytes, PubSubStatus* st) noexcept {
  PublisherSlot& p = ctl_->pubs[pub];
  u32 k = 0;
  while (k < max_loans_ && p.loans[k].load(std::memory_order_relaxed) != 0) ++k;
  if (k == max_loans_) {
    *st = PubSubStatus::too_many_loans;
    return 0;
  }
  if (bytes > (u64{1} << 43)) {
    *st = PubSubStatus::out_of_memory;
    return 0;
  }
  // Owned: a death before the loan is recorded below leaves the block to Heap::reclaim_dead.
  void* b = heap_->allocate_owned(sizeof(SampleHeader) + bytes, 64);
  if (b == nullptr) {
    (void)reclaim();  // dead subscribers may hold samples
    b = heap_->allocate_owned(sizeof(SampleHeader) + bytes, 64);
  }
  if (b == nullptr) {
    *st = PubSubStatus::out_of_memory;
    return 0;
  }
  const u64 s = static_cast<u64>(static_cast<std::byte*>(b) - heap_->base());
  const u64 serial = ctl_->next_serial.fetch_add(1, std::memory_order_relaxed);  // relaxed: uniqueness only
  const u64 token = TopicEngine::token_of(serial, ctl_off_);
  auto* h = ::new (b) SampleHeader{};
  h->refcount.store(0, std::memory_order_relaxed);
  h->size.store(bytes, std::memory_order_relaxed);
  h->seq.store(0, std::memory_order_relaxed);
  h->topic.store(ctl_off_, std::memory_order_relaxed);
  h->publisher.store(static_cast<u64>(pub) + 1, std::memory_order_relaxed);
  h->token.store(token, std::memory_order_relaxed);
  p.loan_tokens[k].store(token, std::memory_order_relaxed);
  // release: the header and the token are written before the record names the block (a
  // repairer that follows the record acquires the topic lock after this process died).
  p.loans[k].store(s, std::memory_order_release);
  *st = PubSubStatus::ok;
  return s;
}

namespace {
int loan_index(const PublisherSlot& p, u64 s, u32 max_loans) noexcept {
  for (u32 k = 0; k < max_loans; ++k)
    if (p.loans[k].load(std::memory_order_relaxed) == s) return static_cast<int>(k);
  return -1;
}
}  // namespace

void Topic::discard(int pub, std::uint64_t s) noexcept {
  PublisherSlot& p = ctl_->pubs[pub];
  const int k = loan_index(p, s, max_loans_);
  if (s == 0 || k < 0) return;
  Guard g(*this);
  if (!g.ok()) return;
  TopicEngine e(*this);
  e.schedule_free(s, p.loan_tokens[k].load(std::memory_order_relaxed));
  e.add(ctl_->freed, -1);  // never published
  e.set(p.loans[k], 0);
  e.commit();
  e.finish_frees(false);
}

PubSubStatus Topic::publish(int pub, std::uint64_t s, Deadline deadline) noexcept {
  PublisherSlot& p = ctl_->pubs[pub];
  const int k = loan_index(p, s, max_loans_);
  if (s == 0 || k < 0) return PubSubStatus::invalid_argument;
  SampleHeader* h = header(s);
  if (h == nullptr) return PubSubStatus::corrupt;
  Guard g(*this);
  if (!g.ok()) return g.status;
  ctl_->publisher_presence.publish(Presence::running);  // subscribers spin only for a running publisher
  TopicEngine e(*this);
  // Room in every block_publisher queue first (nothing is written until there is).
  for (;;) {
    e.reclaim_dead_slots();  // a dead subscriber never blocks, and its samples go back now
    if (!block_queue_above(false)) break;
    if (Clock::now() >= deadline) return PubSubStatus::timed_out;
    // Wait without the lock until every block_publisher queue has room or its owner is dead (the
    // EventCount re-checks at least every kRecheckSlice, which bounds how long a subscriber that
    // died while this publisher waited keeps it waiting: its death notifies nobody).
    unlock();
    // Resumes once the queues are down to half (hysteresis: resuming at the first free slot would
    // make a full queue cost a sleep and a wake-up per sample on both sides).
    ctl_->publisher_presence.publish(Presence::sleeping);
    (void)sleep_until(ctl_->space, [&] { return !block_queue_above(true); }, deadline);
    ctl_->publisher_presence.publish(Presence::running);
    g.status = lock();
    if (!g.ok()) return g.status;
  }
  // Disown before the transaction: from here only the topic frees the block (a death before the
  // commit leaves it recorded as a loan, which the reclaim frees by its token).
  if (heap_->disown(h) != HeapStatus::ok) {
    // Already disowned by an earlier publish of this loan that failed: not an error.
    if (heap_->usable_size(h) == 0) return PubSubStatus::corrupt;
  }
  kill_point(1);
  u64 notify = 0;  // subscribers that got the sample
  const u64 seq = ctl_->seq.load(std::memory_order_relaxed) + 1;
  e.set(ctl_->seq, seq);
  e.set(h->seq, seq);
  u64 refs = 0;
  for (u32 i = 0; i < max_subs_; ++i) {
    SubscriberSlot& sub = ctl_->subs[i];
    if (!e.sub_in_use(i)) continue;
    const u64 d = e.depth_of(sub);
    const u64 head = sub.head.load(std::memory_order_relaxed), tail = sub.tail.load(std::memory_order_relaxed);
    if (d == 0 || head > tail || tail - head > d) {
      e.rollback();
      return PubSubStatus::corrupt;
    }
    if (tail - head == d) {  // drop_oldest (a full block_publisher queue was waited out above)
      e.decref(sub.q[head % d].load(std::memory_order_relaxed));
      e.set(sub.head, head + 1);
      e.add(sub.dropped, 1);
    }
    e.set(sub.q[tail % d], s);
    e.set(sub.tail, tail + 1);
    notify |= u64{1} << i;
    ++refs;
  }
  if (history_ > 0) {
    u64 hh = ctl_->hist_head.load(std::memory_order_relaxed) % history_;
    u64 hc = std::min<u64>(ctl_->hist_count.load(std::memory_order_relaxed), history_);
    if (hc == history_) {
      e.decref(ctl_->hist[hh].load(std::memory_order_relaxed));
      hh = (hh + 1) % history_;
      --hc;
      e.set(ctl_->hist_head, hh);
    }
    e.set(ctl_->hist[(hh + hc) % history_], s);
    e.set(ctl_->hist_count, hc + 1);
    ++refs;
  }
  kill_point(2);
  e.set(h->refcount, refs);
  e.set(p.loans[k], 0);
  e.add(p.published, 1);
  e.add(ctl_->published, 1);
  if (refs > 0) e.add(ctl_->live_samples, 1);
  else e.schedule_free(s, h->token.load(std::memory_order_relaxed));  // nobody to deliver to
  e.commit();
  kill_point(3);
  e.finish_frees(false);
  g.release();
  notify_subscribers(notify);
  return PubSubStatus::ok;
}

bool Topic::block_queue_above(bool half) const noexcept {
  for (u32 i = 0; i < max_subs_; ++i) {
    const SubscriberSlot& sub = ctl_->subs[i];
    // acquire: pairs with the release stores of the transaction that changed them (Tx::set).
    if (sub.state.load(std::memory_order_acquire) != 1 ||
        sub.policy.load(std::memory_order_relaxed) != static_cast<u64>(BackPressure::block_publisher) ||
        TopicEngine::looks_dead(sub.alive))
      continue;
    const u64 d = sub.depth.load(std::memory_order_relaxed);
    // A corrupt depth counts as not full: the transaction that follows validates it and fails.
    if (d < 1 || d > kQueueSlots) continue;
    const u64 queued = sub.tail.load(std::memory_order_acquire) - sub.head.load(std::memory_order_acquire);
    if (half ? queued > d / 2 : queued >= d) return true;
  }
  return false;
}

void Topic::notify_subscribers(std::uint64_t mask) noexcept {
  for (u32 i = 0; i < max_subs_; ++i) {
    if (((mask >> i) & 1) == 0) continue;
    SubscriberSlot& sub = ctl_->subs[i];
    sub.data_ready.notify_all(&sub.presence);
    const u64 w = sub.waitset.load(std::memory_order_acquire);
    if (w != 0 && w <= kWaitSets && waitsets_ != nullptr) waitsets_->entries[w - 1].ready.notify_all();
  }
}

// ---- take / release ----

namespace {
PubSubStatus release_locked(TopicEngine& e, SubscriberSlot& sub, u32 max_held, const std::uint64_t* samples,
                            std::size_t n) noexcept {
  PubSubStatus st = PubSubStatus::ok;
  for (std::size_t i = 0; i < n; ++i) {
    u32 k = 0;
    while (k < max_held && sub.held[k].load(std::memory_order_relaxed) != samples[i]) ++k;
    if (k == max_held || samples[i] == 0) {
      st = PubSubStatus::invalid_argument;  // not held by this subscriber
      continue;
    }
    e.decref(samples[i]);
    e.set(sub.held[k], 0);
  }
  e.commit();
  e.finish_frees(false);
  return st;
}
}  // namespace

PubSubStatus Topic::set_waitset(int sub, std::uint64_t entry_plus_one) noexcept {
  if (entry_plus_one > kWaitSets) return PubSubStatus::invalid_argument;
  Guard g(*this);
  if (!g.ok()) return g.status;
  TopicEngine e(*this);
  e.set(ctl_->subs[sub].waitset, entry_plus_one);
  e.commit();
  return PubSubStatus::ok;
}

PubSubStatus Topic::release(int sub, const std::uint64_t* samples, std::size_t n) noexcept {
  if (n == 0) return PubSubStatus::ok;
  Guard g(*this);
  if (!g.ok()) return g.status;
  TopicEngine e(*this);
  return release_locked(e, ctl_->subs[sub], max_held_, samples, n);
}

PubSubStatus Topic::take(int sub, std::uint64_t* out, std::size_t max_out, std::size_t* n_out,
                         const std::uint64_t* releases, std::size_t n_releases, bool wait, Deadline deadline,
                         SpinPolicy* spin) noexcept {
  *n_out = 0;
  Guard g(*this);
  if (!g.ok()) return g.status;
  TopicEngine e(*this);
  SubscriberSlot& s = ctl_->subs[sub];
  if (n_releases != 0) (void)release_locked(e, s, max_held_, releases, n_releases);
  for (;;) {
    const u64 d = e.depth_of(s);
    const u64 head = s.head.load(std::memory_order_relaxed), tail = s.tail.load(std::memory_order_relaxed);
    if (d == 0 || head > tail || tail - head > d) return PubSubStatus::corrupt;
    if (head != tail) {
      // Up to max_out samples, oldest first, each into a free held slot, in one transaction.
      std::size_t n = 0;
      u32 k = 0;
      for (u64 at = head; at != tail && n < max_out; ++at, ++n) {
        while (k < max_held_ && s.held[k].load(std::memory_order_relaxed) != 0) ++k;
        if (k == max_held_) break;
        const u64 smp = s.q[at % d].load(std::memory_order_relaxed);
        if (header(smp) == nullptr) {
          e.rollback();
          return PubSubStatus::corrupt;
        }
        e.set(s.held[k], smp);
        kill_point(4);
        e.set(s.head, at + 1);
        out[n] = smp;
      }
      if (n == 0) return PubSubStatus::too_many_held;
      e.add(s.received, static_cast<std::int64_t>(n));
      e.commit();
      *n_out = n;
      // The crossing to half a queue is what a waiting publisher waits for (block_queue_above).
      const bool made_room = tail - head > d / 2 && tail - head - n <= d / 2 &&
                             s.policy.load(std::memory_order_relaxed) == static_cast<u64>(BackPressure::block_publisher);
      g.release();
      if (made_room) ctl_->space.notify_all();  // a publisher may wait for exactly this
      return PubSubStatus::ok;
    }
    if (!wait) return PubSubStatus::would_block;
    if (Clock::now() >= deadline) return PubSubStatus::timed_out;
    // Wait without the lock; a publish that queues for this subscriber notifies data_ready.
    unlock();
    if (spin != nullptr)
      (void)await_until(s.data_ready, [&] { return has_data(sub); }, deadline, *spin, s.presence,
                        ctl_->publisher_presence);
    else
      (void)sleep_until(s.data_ready, [&] { return has_data(sub); }, deadline, &s.presence);
    g.status = lock();
    if (!g.ok()) return g.status;
  }
}

// ---- reclaim / verify / stats ----

std::size_t Topic::reclaim() noexcept {
  Guard g(*this);
  if (!g.ok()) return 0;
  return TopicEngine(*this).reclaim_dead_slots();
}

std::vector<std::string> Topic::verify() {
  std::vector<std::string> f;
  Guard g(*this);
  if (!g.ok()) {
    f.push_back(std::string("the topic lock: ") + to_string(g.status));
    return f;
  }
  TopicEngine e(*this);
  auto hex = [](u64 v) {
    char b[32];
    std::snprintf(b, sizeof b, "%#" PRIx64, v);
    return std::string(b);
  };
  std::map<u64, u64> refs;  // sample -> H + Q + D
  auto ref = [&](u64 smp, const std::string& where) {
    if (header(smp) == nullptr) {
      f.push_back(where + " names " + hex(smp) + ", not a live sample of this topic");
      return;
    }
    ++refs[smp];
  };
  if (ctl_->log_count.load(std::memory_order_relaxed) != 0) f.push_back("INVARIANT6: the undo log is not empty outside a transaction");
  if (ctl_->frees_count.load(std::memory_order_relaxed) != 0) f.push_back("INVARIANT6: frees pending outside a transaction");
  // History (INVARIANT4).
  const u64 hc = ctl_->hist_count.load(std::memory_order_relaxed);
  if (hc > history_) f.push_back("INVARIANT4: hist_count " + std::to_string(hc) + " > history " + std::to_string(history_));
  u64 prev_seq = 0;
  for (u64 j = 0; j < std::min<u64>(hc, history_); ++j) {
    const u64 smp = ctl_->hist[(ctl_->hist_head.load(std::memory_order_relaxed) + j) % history_].load(std::memory_order_relaxed);
    ref(smp, "history[" + std::to_string(j) + "]");
    if (SampleHeader* h = header(smp)) {
      const u64 sq = h->seq.load(std::memory_order_relaxed);
      if (sq <= prev_seq) f.push_back("INVARIANT4: history seq not increasing at " + std::to_string(j));
      prev_seq = sq;
    }
  }
  // Queues and held lists (INVARIANT3).
  for (u32 i = 0; i < kMaxSubscribers; ++i) {
    SubscriberSlot& s = ctl_->subs[i];
    const std::string who = "subscriber " + std::to_string(i);
    if (!e.sub_in_use(i)) {
      if (s.state.load(std::memory_order_relaxed) != 0) f.push_back("INVARIANT5: " + who + " has state " + std::to_string(s.state.load()));
      continue;
    }
    if (i >= max_subs_) f.push_back("INVARIANT5: " + who + " is in use beyond max_subscribers");
    const u64 d = e.depth_of(s);
    const u64 head = s.head.load(std::memory_order_relaxed), tail = s.tail.load(std::memory_order_relaxed);
    if (d == 0 || head > tail || tail - head > d) {
      f.push_back("INVARIANT3: " + who + " queue head " + std::to_string(head) + " tail " + std::to_string(tail) +
                  " depth " + std::to_string(s.depth.load()));
      continue;
    }
    prev_seq = 0;
    for (u64 j = head; j < tail; ++j) {
      const u64 smp = s.q[j % d].load(std::memory_order_relaxed);
      ref(smp, who + " queue[" + std::to_string(j) + "]");
      if (SampleHeader* h = header(smp)) {
        const u64 sq = h->seq.load(std::memory_order_relaxed);
        if (sq <= prev_seq) f.push_back("INVARIANT3: " + who + " queue seq not increasing at " + std::to_string(j));
        prev_seq = sq;
      }
    }
    for (u32 k = 0; k < kMaxHeld; ++k)
      if (u64 smp = s.held[k].load(std::memory_order_relaxed)) ref(smp, who + " held[" + std::to_string(k) + "]");
  }
  // INVARIANT1 and 2.
  for (auto& [smp, n] : refs) {
    const u64 rc = header(smp)->refcount.load(std::memory_order_relaxed);
    if (rc != n)
      f.push_back("INVARIANT1: sample " + hex(smp) + " refcount " + std::to_string(rc) + " != H+Q+D " + std::to_string(n));
  }
  const u64 live = ctl_->live_samples.load(std::memory_order_relaxed);
  if (live != refs.size())
    f.push_back("INVARIANT2: live_samples " + std::to_string(live) + " != referenced samples " + std::to_string(refs.size()));
  for (u32 i = 0; i < kMaxPublishers; ++i) {
    if (!e.pub_in_use(i)) continue;
    for (u32 k = 0; k < kMaxLoans; ++k) {
      const u64 smp = ctl_->pubs[i].loans[k].load(std::memory_order_acquire);
      if (smp == 0) continue;
      SampleHeader* h = header(smp);
      if (h == nullptr) f.push_back("INVARIANT1: publisher " + std::to_string(i) + " loan names " + hex(smp) + ", not a sample");
      else if (refs.count(smp) != 0 || h->refcount.load(std::memory_order_relaxed) != 0)
        f.push_back("INVARIANT1: loaned sample " + hex(smp) + " is also referenced");
    }
  }
  return f;
}

TopicStats Topic::stats() {
  TopicStats st;
  st.name = name_;
  st.history = history_;
  st.max_subscribers = max_subs_;
  st.max_publishers = max_pubs_;
  Guard g(*this);
  if (!g.ok()) throw Error(Errc::not_recoverable, "pubsub topic '" + name_ + "': " + to_string(g.status));
  TopicEngine e(*this);
  st.published = ctl_->published.load(std::memory_order_relaxed);
  st.live_samples = ctl_->live_samples.load(std::memory_order_relaxed);
  st.freed = ctl_->freed.load(std::memory_order_relaxed);
  st.history_count = ctl_->hist_count.load(std::memory_order_relaxed);
  st.reclaimed_subscribers = ctl_->reclaimed_subscribers.load(std::memory_order_relaxed);
  st.reclaimed_publishers = ctl_->reclaimed_publishers.load(std::memory_order_relaxed);
  st.reclaimed_loans = ctl_->reclaimed_loans.load(std::memory_order_relaxed);
  for (u32 i = 0; i < kMaxPublishers; ++i) {
    if (!e.pub_in_use(i)) continue;
    PublisherSlot& p = ctl_->pubs[i];
    PublisherInfo pi;
    pi.slot = i;
    pi.pid = static_cast<std::int32_t>(p.pid.load(std::memory_order_relaxed));
    pi.alive = !TopicEngine::looks_dead(p.alive);
    for (u32 k = 0; k < kMaxLoans; ++k) pi.loans += p.loans[k].load(std::memory_order_relaxed) != 0;
    pi.published = p.published.load(std::memory_order_relaxed);
    st.publishers.push_back(pi);
  }
  for (u32 i = 0; i < kMaxSubscribers; ++i) {
    if (!e.sub_in_use(i)) continue;
    SubscriberSlot& s = ctl_->subs[i];
    SubscriberInfo si;
    si.slot = i;
    si.pid = static_cast<std::int32_t>(s.pid.load(std::memory_order_relaxed));
    si.alive = !TopicEngine::looks_dead(s.alive);
    si.policy = static_cast<BackPressure>(s.policy.load(std::memory_order_relaxed));
    si.depth = s.depth.load(std::memory_order_relaxed);
    si.queued = s.tail.load(std::memory_order_relaxed) - s.head.load(std::memory_order_relaxed);
    for (u32 k = 0; k < kMaxHeld; ++k) si.held += s.held[k].load(std::memory_order_relaxed) != 0;
    si.received = s.received.load(std::memory_order_relaxed);
    si.dropped = s.dropped.load(std::memory_order_relaxed);
    st.subscribers.push_back(si);
  }
  return st;
}

}  // namespace shmkit
