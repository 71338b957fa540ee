// Publisher and subscriber slots of a topic: claiming one, releasing it, and reclaiming the slots
// of dead owners (their liveness locks, INVARIANT5) with everything they hold.
#include <algorithm>

#include "shmkit/sys/process.hpp"
#include "topic_engine.hpp"

namespace shmkit {

void TopicEngine::drop_subscriber(SubscriberSlot& s) noexcept {
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

void TopicEngine::drop_publisher(PublisherSlot& p) noexcept {
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

bool TopicEngine::take_over(Lock& alive) noexcept {
  const LockResult r = alive.try_acquire();
  if (r == LockResult::owner_died) {
    alive.mark_consistent();
    return true;
  }
  if (r == LockResult::acquired) return true;  // in use but unowned: its claimant is gone
  return false;
}

std::size_t TopicEngine::reclaim_dead_slots() noexcept {
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

std::size_t Topic::reclaim() noexcept {
  Guard g(*this);
  if (!g.ok()) return 0;
  return TopicEngine(*this).reclaim_dead_slots();
}

}  // namespace shmkit
