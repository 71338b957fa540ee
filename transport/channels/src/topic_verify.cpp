// verify() (INVARIANT1-6 of topic_layout.hpp, checked under the topic lock) and stats() (the
// counters, publishers and subscribers `shmkit info` lists).
#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <map>
#include <string>

#include "topic_engine.hpp"

namespace shmkit {

// ---- verify / stats ----

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
