// WaitSet (waitset.hpp): an entry of the segment's WaitSet table, named by the attached
// subscribers' slots, and an EventCount wait on "one of them has data".
#include "shmkit/channels/waitset.hpp"

#include <string>

#include "shmkit/heap/heap.hpp"
#include "shmkit/sys/error.hpp"

namespace shmkit {

using namespace pubsub_detail;

namespace {
// Holds the table's claim lock (repaired: a claim is one store of `state` after the entry's
// liveness lock was taken, so a dead claimant leaves nothing to undo).
struct TableGuard {
  Lock& l;
  explicit TableGuard(Lock& lock) : l(lock) {
    const LockResult r = l.acquire();
    if (r == LockResult::owner_died) l.mark_consistent();
    else if (r != LockResult::acquired)
      throw Error(Errc::not_recoverable, std::string("pubsub WaitSet table lock: ") + std::string(to_string(r)));
  }
  ~TableGuard() { l.unlock(); }
};
}  // namespace

WaitSet::WaitSet(Heap& heap) : heap_(&heap) {
  table_ = heap.find_or_construct<WaitSetTable>(kWaitSetTableName);
  if (table_->magic != kWaitSetMagic)
    throw Error(Errc::corrupt, std::string("pubsub: the named object ") + kWaitSetTableName + " is not a WaitSet table");
  TableGuard g(table_->lock);
  for (std::uint32_t i = 0; i < kWaitSets; ++i) {
    WaitSetEntry& e = table_->entries[i];
    const std::uint32_t w = e.alive.debug_word();
    const bool dead = (w & locks_detail::kOwnerDied) != 0 || (w & locks_detail::kTidMask) == 0;
    if (!dead) continue;  // held by a live WaitSet
    const LockResult r = e.alive.try_acquire();
    if (r == LockResult::owner_died) e.alive.mark_consistent();
    else if (r != LockResult::acquired) continue;
    e.state.store(1, std::memory_order_release);  // INVARIANT1 (waitset_layout.hpp)
    index_ = i;
    return;
  }
  throw Error(Errc::out_of_memory, "pubsub: all " + std::to_string(kWaitSets) + " WaitSet entries of the segment are in use");
}

WaitSet::~WaitSet() {
  for (std::size_t i = 0; i < subs_.size(); ++i) detach(i);
  WaitSetEntry& e = table_->entries[index_];
  if (!e.alive.held_by_this_thread()) return;  // a forked child's copy
  e.state.store(0, std::memory_order_release);
  e.alive.unlock();
}

std::size_t WaitSet::attach(BytesSubscriber& sub) {
  if (&sub.topic().heap() != heap_)
    throw Error(Errc::invalid_argument, "pubsub WaitSet: subscriber of topic '" + sub.topic().name() +
                                            "' is in another segment's heap than this WaitSet");
  const PubSubStatus st = sub.topic().set_waitset(sub.slot(), index_ + 1);
  if (st != PubSubStatus::ok)
    throw Error(Errc::not_recoverable, "pubsub WaitSet: attaching to topic '" + sub.topic().name() + "': " + to_string(st));
  subs_.push_back(&sub);
  return subs_.size() - 1;
}

void WaitSet::detach(std::size_t index) noexcept {
  if (index >= subs_.size() || subs_[index] == nullptr) return;
  (void)subs_[index]->topic().set_waitset(subs_[index]->slot(), 0);
  subs_[index] = nullptr;
}

std::vector<std::size_t> WaitSet::ready() const {
  std::vector<std::size_t> r;
  for (std::size_t i = 0; i < subs_.size(); ++i)
    if (subs_[i] != nullptr && subs_[i]->has_data()) r.push_back(i);
  return r;
}

std::vector<std::size_t> WaitSet::wait(Deadline deadline) {
  auto any = [&] {
    for (BytesSubscriber* s : subs_)
      if (s != nullptr && s->has_data()) return true;
    return false;
  };
  (void)sleep_until(table_->entries[index_].ready, any, deadline);
  return ready();
}

}  // namespace shmkit
