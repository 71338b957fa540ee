// The topic's undo-log transaction (INVARIANT6) and its repair after a death, the sample
// references a transaction drops, and the heap frees that follow a commit. Exactly-once reclaim
// of a sample block: topic_engine.hpp.
#include "topic_engine.hpp"

namespace shmkit {

bool TopicEngine::word_ok(u64 off) const noexcept {
  if (off % 8 != 0) return false;
  const u64 ctl = t.ctl_off_;
  if (off >= ctl && off + 8 <= ctl + sizeof(TopicControl)) return true;
  return t.header(off & ~u64{63}) != nullptr;  // a word of a sample header
}
void TopicEngine::rollback() noexcept {
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

void TopicEngine::decref(u64 s) noexcept {
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

void TopicEngine::schedule_free(u64 s, u64 token) noexcept {
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

void TopicEngine::finish_frees(bool after_death) noexcept {
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

void TopicEngine::repair() noexcept {
  rollback();
  finish_frees(true);
}

PubSubStatus TopicEngine::after_acquire(LockResult r) noexcept {
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

PubSubStatus Topic::lock(Deadline deadline) noexcept {
  return TopicEngine(*this).after_acquire(ctl_->lock.acquire(deadline));
}
void Topic::unlock() noexcept { ctl_->lock.unlock(); }

}  // namespace shmkit
