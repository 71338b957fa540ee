// The 1:N fan-out: a publisher's loan, publish (into every subscriber's queue and the history,
// waiting on block_publisher subscribers) and discard; a subscriber's take and release.
#include <algorithm>
#include <new>

#include "shmkit/channels/waitset_layout.hpp"
#include "topic_engine.hpp"

namespace shmkit {

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

}  // namespace shmkit
