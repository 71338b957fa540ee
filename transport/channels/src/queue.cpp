#include "shmkit/channels/queue.hpp"

#include <algorithm>
#include <cstddef>
#include <type_traits>
#include <cstring>
#include <new>

#include "shmkit/sys/cpu.hpp"
#include "shmkit/sys/error.hpp"
#include "shmkit/sys/proc_control.hpp"

namespace shmkit {

namespace {

enum : std::uint32_t { kKindMsg = 0x4d53u, kKindPad = 0x5044u };

// The 16-byte header in front of every record (INVARIANT3).
struct RecordHeader {
  std::uint32_t len;   // message bytes (0 for a pad)
  std::uint32_t kind;  // kKindMsg or kKindPad
  std::uint64_t pos;   // the commit word: == the record's position once it is complete (INVARIANT3/7)
};
static_assert(sizeof(RecordHeader) == Queue::kRecordHeader);
static_assert(std::is_standard_layout_v<RecordHeader> && offsetof(RecordHeader, pos) == 8,
              "the commit word is the 8-aligned pos field of a 64-aligned record");
constexpr std::uint64_t kCommitOffset = offsetof(RecordHeader, pos);

constexpr std::uint64_t kAlign = Queue::kRecordAlign;
constexpr std::uint64_t round_align(std::uint64_t n) noexcept { return (n + kAlign - 1) & ~(kAlign - 1); }
constexpr std::uint64_t record_bytes(std::uint64_t len) noexcept { return round_align(Queue::kRecordHeader + len); }

// A waiting consumer reads the record line at head every kPollEvery-th spin iteration (see pop()).
constexpr std::uint32_t kPollEvery = 4;

// Every 64th operation of this thread (the first one included) publishes the side's Presence as
// running on this CPU: migrations are rare, and asking for the CPU costs about 5 ns.
constinit thread_local std::uint32_t tl_ops = 0;
void publish_sometimes(Presence& side) noexcept {
  if ((tl_ops++ & 63) == 0) side.publish(Presence::running);
}

}  // namespace

const char* to_string(QueueStatus s) noexcept {
  switch (s) {
    case QueueStatus::ok: return "ok";
    case QueueStatus::would_block: return "would_block";
    case QueueStatus::timed_out: return "timed_out";
    case QueueStatus::closed: return "closed";
    case QueueStatus::too_large: return "too_large";
    case QueueStatus::buffer_too_small: return "buffer_too_small";
    case QueueStatus::not_recoverable: return "not_recoverable";
    case QueueStatus::corrupt: return "corrupt";
  }
  return "?";
}

std::size_t Queue::required_bytes(std::size_t ring_bytes) noexcept {
  return sizeof(QueueControl) + round_align(ring_bytes);
}

std::size_t Queue::min_ring_bytes(std::uint32_t max_message) noexcept {
  return 2 * record_bytes(max_message);
}

Queue Queue::create(void* mem, std::size_t bytes, std::uint32_t max_message,
                    std::span<std::byte> receipt_region) {
  if (mem == nullptr || reinterpret_cast<std::uintptr_t>(mem) % 64 != 0)
    throw Error(Errc::invalid_argument, "Queue::create: memory must be non-null and 64-byte aligned");
  if (bytes < sizeof(QueueControl))
    throw Error(Errc::invalid_argument, "Queue::create: " + std::to_string(bytes) +
                                            " bytes cannot hold the queue's control block");
  std::uint64_t capacity = (bytes - sizeof(QueueControl)) & ~(kAlign - 1);
  if (capacity < min_ring_bytes(max_message))
    throw Error(Errc::invalid_argument,
                "Queue::create: a ring of " + std::to_string(capacity) + " bytes cannot hold two messages of " +
                    std::to_string(max_message) + " bytes; give it at least Queue::required_bytes(" +
                    std::to_string(min_ring_bytes(max_message)) + ")");
  std::memset(mem, 0, sizeof(QueueControl));
  auto* c = new (mem) QueueControl;  // value-initialised above: all-zero locks are unlocked
  c->version = QueueControl::kVersion;
  c->max_message = max_message;
  c->capacity = capacity;
  c->ring_offset = sizeof(QueueControl);
  c->total_bytes = bytes;
  // Positions start at `capacity` (not 0) so that 0 never names a message (PopReceipt::pos == 0
  // means "none"), and ring index = pos % capacity.
  c->tail.store(capacity, std::memory_order_relaxed);
  c->head.store(capacity, std::memory_order_relaxed);
  // INVARIANT7 at the start: the header word at tail (index 0) must not read as committed; the
  // rest of the ring may hold garbage (every later header word is cleared by the record before it).
  std::atomic_ref<std::uint64_t>(*reinterpret_cast<std::uint64_t*>(static_cast<std::byte*>(mem) +
                                                                    sizeof(QueueControl) + kCommitOffset))
      .store(0, std::memory_order_relaxed);
  // Publishes the whole block: an attacher that sees the magic (acquire) sees the fields above.
  std::atomic_ref<std::uint64_t>(c->magic).store(QueueControl::kMagic, std::memory_order_release);
  return attach(mem, bytes, receipt_region);
}

Queue Queue::attach(void* mem, std::size_t bytes, std::span<std::byte> receipt_region) {
  if (mem == nullptr || reinterpret_cast<std::uintptr_t>(mem) % 64 != 0 || bytes < sizeof(QueueControl))
    throw Error(Errc::invalid_argument, "Queue::attach: memory must be 64-byte aligned and hold a QueueControl");
  auto* c = static_cast<QueueControl*>(mem);
  if (std::atomic_ref<std::uint64_t>(c->magic).load(std::memory_order_acquire) != QueueControl::kMagic)
    throw Error(Errc::bad_magic, "Queue::attach: no queue at this address (its magic number is not a Queue's; "
                                  "was it made by Queue::create at this offset?)");
  if (c->version != QueueControl::kVersion)
    throw Error(Errc::version_mismatch, "Queue::attach: queue layout version " + std::to_string(c->version) +
                                            ", this build understands " + std::to_string(QueueControl::kVersion));
  // Validate the geometry against what this process mapped before trusting any of it.
  if (c->ring_offset != sizeof(QueueControl) || c->capacity % kAlign != 0 || c->capacity == 0 ||
      c->capacity > bytes - sizeof(QueueControl) || c->capacity < min_ring_bytes(c->max_message))
    throw Error(Errc::corrupt, "Queue::attach: queue geometry does not fit the " + std::to_string(bytes) +
                                   " bytes given (capacity " + std::to_string(c->capacity) + ")");
  Queue q;
  q.ctl_ = c;
  q.ring_ = static_cast<std::byte*>(mem) + sizeof(QueueControl);
  q.capacity_ = c->capacity;
  q.max_message_ = c->max_message;
  q.receipt_region_ = receipt_region;
  q.wake_threshold_ = std::min<std::uint64_t>(q.capacity_, std::max<std::uint64_t>(q.capacity_ / 2,
                                                                                  min_ring_bytes(q.max_message_)));
  return q;
}

// ---- record access ---------------------------------------------------------------------------
// idx is always < capacity_ and a multiple of 64 (INVARIANT2/3), computed from a local capacity_:
// every access below stays inside the ring.

std::atomic_ref<std::uint64_t> Queue::commit_word(std::uint64_t idx) const noexcept {
  return std::atomic_ref<std::uint64_t>(*reinterpret_cast<std::uint64_t*>(ring_ + idx + kCommitOffset));
}

void Queue::read_len_kind(std::uint64_t idx, std::uint32_t& len, std::uint32_t& kind) const noexcept {
  // Plain reads: only after the commit word was seen (acquire) naming this record, and while its
  // side's lock keeps head at it (no producer may rewrite it before head moves past).
  std::memcpy(&len, ring_ + idx + offsetof(RecordHeader, len), sizeof len);
  std::memcpy(&kind, ring_ + idx + offsetof(RecordHeader, kind), sizeof kind);
}

void Queue::write_len_kind(std::uint64_t idx, std::uint32_t len, std::uint32_t kind) noexcept {
  std::memcpy(ring_ + idx + offsetof(RecordHeader, len), &len, sizeof len);
  std::memcpy(ring_ + idx + offsetof(RecordHeader, kind), &kind, sizeof kind);
}

// ---- locking and repair ----------------------------------------------------------------------

QueueStatus Queue::lock_side(Side side, bool try_only, sys::Deadline deadline) noexcept {
  Lock& l = side == Side::producer ? ctl_->producer_lock : ctl_->consumer_lock;
  LockResult r = try_only ? l.try_acquire() : l.acquire(deadline);
  if (r == LockResult::acquired) return QueueStatus::ok;
  return lock_side_slow(side, r);
}

QueueStatus Queue::lock_side_slow(Side side, LockResult r) noexcept {
  Lock& l = side == Side::producer ? ctl_->producer_lock : ctl_->consumer_lock;
  switch (r) {
    case LockResult::acquired: return QueueStatus::ok;
    case LockResult::owner_died: {
      // The previous holder died inside push or pop. Each operation commits with one store made
      // last (INVARIANT5), so the state is either before or after it; repair re-validates it and
      // settles the receipt journal. A failed validation leaves the lock unrepaired (it becomes
      // not recoverable) rather than letting anyone run on a corrupt ring.
      bool fine = side == Side::producer ? repair_producer() : repair_consumer();
      if (!fine) {
        l.unlock();
        return QueueStatus::corrupt;
      }
      l.mark_consistent();
      return QueueStatus::ok;
    }
    case LockResult::not_recoverable: return QueueStatus::not_recoverable;
    case LockResult::timed_out: return QueueStatus::timed_out;
    case LockResult::would_block: return QueueStatus::would_block;
  }
  return QueueStatus::corrupt;
}

void Queue::unlock_side(Side side) noexcept {
  (side == Side::producer ? ctl_->producer_lock : ctl_->consumer_lock).unlock();
}

QueueStatus Queue::enter(Side side, bool try_only, sys::Deadline deadline) noexcept {
  if (claimed(side)) return QueueStatus::ok;
  return lock_side(side, try_only, deadline);
}

void Queue::leave(Side side) noexcept {
  if (!claimed(side)) unlock_side(side);
}

QueueStatus Queue::claim(Side side, sys::Deadline deadline) noexcept {
  if (claimed(side)) return QueueStatus::ok;
  QueueStatus s = lock_side(side, false, deadline);
  claimed(side) = s == QueueStatus::ok;
  return s;
}

void Queue::release(Side side) noexcept {
  if (!claimed(side)) return;
  claimed(side) = false;
  unlock_side(side);
}

bool Queue::repair_producer() noexcept {
  // A dead producer may have committed its record (the header's pos word, INVARIANT5) and died
  // before advancing `tail`: roll tail forward over committed records. It committed at most a pad
  // and one message (every earlier death was repaired by the acquirer that inherited the lock), so
  // two steps suffice; a third committed record would mean foreign writes.
  std::uint64_t t = ctl_->tail.load(std::memory_order_relaxed);  // ours now (INVARIANT5)
  if (t % kAlign != 0) return false;
  for (int step = 0; step < 2; ++step) {
    std::uint64_t idx = t % capacity_;
    // acquire: pairs with the dead producer's commit store; its record bytes are then visible.
    if (commit_word(idx).load(std::memory_order_acquire) != t) break;
    std::uint32_t len = 0, kind = 0;
    read_len_kind(idx, len, kind);
    if (kind == kKindPad) {
      t += capacity_ - idx;
    } else if (kind == kKindMsg && len <= max_message_ && record_bytes(len) <= capacity_ - idx) {
      t += record_bytes(len);
    } else {
      return false;
    }
  }
  // head may have passed the old tail (consumers take a record once it is committed) but never t.
  std::uint64_t h = ctl_->head.load(std::memory_order_acquire);
  if (!(h <= t && t - h <= capacity_ && h % kAlign == 0)) return false;
  ctl_->tail.store(t, std::memory_order_release);
  return true;
}

bool Queue::receipt_ok(const void* r) const noexcept {
  auto a = reinterpret_cast<std::uintptr_t>(r);
  auto lo = reinterpret_cast<std::uintptr_t>(receipt_region_.data());
  return !receipt_region_.empty() && a % alignof(PopReceipt) == 0 && a >= lo &&
         a - lo <= receipt_region_.size() - sizeof(PopReceipt) && receipt_region_.size() >= sizeof(PopReceipt);
}

bool Queue::repair_consumer() noexcept {
  // tail is not compared: a producer may have committed a record and not yet advanced tail
  // (INVARIANT1 holds under the producer lock only).
  std::uint64_t h = ctl_->head.load(std::memory_order_relaxed);  // ours now (INVARIANT5)
  if (h % kAlign != 0 || h < capacity_) return false;
  auto active = std::atomic_ref<std::uint32_t>(ctl_->journal_active);
  if (active.load(std::memory_order_acquire) == 0) return true;
  // INVARIANT6: a pop with a receipt was in flight. If its receipt already names the message at
  // head, the dead consumer received it: finish the commit. Otherwise the message stays.
  std::uint64_t jpos = std::atomic_ref<std::uint64_t>(ctl_->journal_pos).load(std::memory_order_acquire);
  std::int64_t rel = std::atomic_ref<std::int64_t>(ctl_->journal_receipt_rel).load(std::memory_order_acquire);
  auto* receipt = reinterpret_cast<PopReceipt*>(reinterpret_cast<std::uintptr_t>(ctl_) +
                                                static_cast<std::uintptr_t>(rel));
  const std::uint64_t idx = h % capacity_;
  if (jpos == h && receipt_ok(receipt) && receipt->pos.load(std::memory_order_acquire) == jpos &&
      commit_word(idx).load(std::memory_order_acquire) == h) {
    std::uint32_t len = 0, kind = 0;
    read_len_kind(idx, len, kind);
    if (kind != kKindMsg || len > max_message_ || record_bytes(len) > capacity_ - idx) return false;
    ctl_->head.store(h + record_bytes(len), std::memory_order_release);
  }
  // A receipt outside this process's receipt region cannot be checked: the message stays in the
  // queue (delivered again rather than lost).
  active.store(0, std::memory_order_release);
  return true;
}

// ---- push ------------------------------------------------------------------------------------

QueueResult Queue::push_locked(std::span<const std::byte> msg) noexcept {
  // closed is read under producer_lock: close() sets it under the same lock, so no push commits
  // after close() returned (consumers that saw closed then see every commit).
  if (ctl_->closed.load(std::memory_order_acquire) != 0) return {QueueStatus::closed, 0, 0};
  // tail is ours (INVARIANT5): relaxed, the previous holder's release of the lock ordered it.
  const std::uint64_t t = ctl_->tail.load(std::memory_order_relaxed);
  const std::uint64_t rec = record_bytes(msg.size());
  std::uint64_t idx = t % capacity_;
  const std::uint64_t to_end = capacity_ - idx;
  const std::uint64_t pad = rec > to_end ? to_end : 0;  // records never straddle the end (INVARIANT3)
  // First against the cached head (a lower bound: head only grows), so that the line the
  // consumers write on every pop is read only when the ring looks full. head is read with
  // acquire: pairs with the consumers' release store of head, so their reads of the bytes we are
  // about to overwrite have finished (a cached value was loaded the same way, under this lock).
  std::uint64_t h = cached_head_.load(std::memory_order_relaxed);
  if (h > t || t - h > capacity_ || pad + rec > capacity_ - (t - h)) {
    h = ctl_->head.load(std::memory_order_acquire);
    if (!(h <= t && t - h <= capacity_ && t % kAlign == 0)) return {QueueStatus::corrupt, 0, 0};
    cached_head_.store(h, std::memory_order_relaxed);
    if (pad + rec > capacity_ - (t - h)) return {QueueStatus::would_block, 0, 0};
  }
  if (pad != 0) {
    // The pad is its own commit (it carries no message): a consumer may skip it at once. Its word
    // at index 0 cannot read as committed (INVARIANT7: a record starts at index 0 in every lap).
    write_len_kind(idx, 0, kKindPad);
    // release: the pad's kind above is visible to a consumer that sees the commit.
    commit_word(idx).store(t, std::memory_order_release);
    idx = 0;
  }
  const std::uint64_t pos = t + pad;
  const std::uint64_t end = pos + rec;
  write_len_kind(idx, static_cast<std::uint32_t>(msg.size()), kKindMsg);
  if (!msg.empty()) std::memcpy(ring_ + idx + kRecordHeader, msg.data(), msg.size());
  // INVARIANT7: the word where the next record's header will go must not read as committed. When
  // end - h == capacity it holds the header of the record at h (pos h != end) and is live: leave it.
  // relaxed: ordered before the commit below by its release.
  if (end - h < capacity_) commit_word(end % capacity_).store(0, std::memory_order_relaxed);
  // The commit (INVARIANT5). release: the record's bytes are visible to a consumer that sees it.
  // The sleep protocol's store-load ordering (commit before the load of the items EventCount)
  // comes from notify_all's fence after the unlock (EventCount INVARIANT1): a seq_cst store here
  // (an XCHG) was a second locked instruction per push (measured: 71 ns per message between two
  // CPUs with it, 62 without).
  commit_word(idx).store(pos, std::memory_order_release);
  // Producers' own bookkeeping (INVARIANT1); consumers never read it on their path.
  // release: bytes_used() and producers' waits read it without the lock.
  ctl_->tail.store(end, std::memory_order_release);
  return {QueueStatus::ok, static_cast<std::uint32_t>(msg.size()), pos};
}

QueueResult Queue::try_push(std::span<const std::byte> msg) noexcept {
  if (msg.size() > max_message_) return {QueueStatus::too_large, 0, 0};
  QueueStatus s = enter(Side::producer, true, sys::kNoDeadline);
  if (s != QueueStatus::ok) return {s, 0, 0};
  QueueResult r = push_locked(msg);
  leave(Side::producer);
  if (r.status == QueueStatus::ok) {
    wake_consumer();
    publish_sometimes(ctl_->producers);
  }
  return r;
}

QueueResult Queue::push(std::span<const std::byte> msg, sys::Deadline deadline) noexcept {
  if (msg.size() > max_message_) return {QueueStatus::too_large, 0, 0};
  for (;;) {
    QueueStatus s = enter(Side::producer, false, deadline);
    if (s != QueueStatus::ok) return {s, 0, 0};
    QueueResult r = push_locked(msg);
    leave(Side::producer);
    if (r.status == QueueStatus::ok) {
      wake_consumer();
      publish_sometimes(ctl_->producers);
      return r;
    }
    if (r.status != QueueStatus::would_block) return r;
    if (deadline != sys::kNoDeadline && sys::Clock::now() >= deadline)
      return {QueueStatus::timed_out, 0, 0};
    // Full: wait until wake_threshold_ bytes are free (or the queue closes). That is at least
    // room for the message and any pad (2 * max record <= threshold), and waiting for more than
    // "it fits" turns a full queue from a per-message ping-pong of the head line between the two
    // cores into bursts (measured: several times the throughput with one producer and consumer).
    // acquire loads: pair with the consumers' release of head and close()'s store; the sleep
    // protocol's ordering comes from the EventCount (INVARIANT1).
    auto ready = [&] {
      std::uint64_t t = ctl_->tail.load(std::memory_order_acquire);
      std::uint64_t h = ctl_->head.load(std::memory_order_acquire);
      return ctl_->closed.load(std::memory_order_acquire) != 0 || t < h ||
             capacity_ - std::min(capacity_, t - h) >= wake_threshold_;
    };
    (void)await_until(ctl_->space, ready, deadline, push_spin_, ctl_->producers, ctl_->consumers);
  }
}

// ---- pop -------------------------------------------------------------------------------------

QueueResult Queue::pop_locked(std::span<std::byte> out, PopReceipt* receipt) noexcept {
  std::uint64_t h = ctl_->head.load(std::memory_order_relaxed);  // ours (INVARIANT5)
  for (;;) {
    const std::uint64_t idx = h % capacity_;
    // The record at head is there iff its commit word names head (INVARIANT3/7): the producers'
    // tail line is never read here. acquire: pairs with the producer's commit store.
    if (commit_word(idx).load(std::memory_order_acquire) != h) {
      // closed, then the word again: close() sets closed after every commit (see push_locked),
      // so a queue seen closed and then empty at head is drained.
      bool closed = ctl_->closed.load(std::memory_order_acquire) != 0;
      if (commit_word(idx).load(std::memory_order_acquire) != h)
        return {closed ? QueueStatus::closed : QueueStatus::would_block, 0, 0};
    }
    std::uint32_t len = 0, kind = 0;
    read_len_kind(idx, len, kind);
    if (kind == kKindPad) {
      // Skipping a pad is its own commit: it carries no message. release: our read of it is done.
      h += capacity_ - idx;
      ctl_->head.store(h, std::memory_order_release);
      continue;
    }
    const std::uint64_t rec = record_bytes(len);
    if (kind != kKindMsg || len > max_message_ || rec > capacity_ - idx) return {QueueStatus::corrupt, 0, 0};
    if (len > out.size()) return {QueueStatus::buffer_too_small, len, h};
    if (len != 0) std::memcpy(out.data(), ring_ + idx + kRecordHeader, len);
    if (receipt != nullptr) {
      // Journal first (INVARIANT6), then the receipt, then the commit. Release stores keep the
      // order for a repairer that inherits the lock after our death.
      std::atomic_ref<std::uint64_t>(ctl_->journal_pos).store(h, std::memory_order_relaxed);
      std::atomic_ref<std::int64_t>(ctl_->journal_receipt_rel)
          .store(static_cast<std::int64_t>(reinterpret_cast<std::uintptr_t>(receipt) -
                                           reinterpret_cast<std::uintptr_t>(ctl_)),
                 std::memory_order_relaxed);
      std::atomic_ref<std::uint32_t>(ctl_->journal_active).store(1, std::memory_order_release);
      receipt->pos.store(h, std::memory_order_release);
    }
    // The commit (INVARIANT5). release: our reads of the record are done before a producer may
    // overwrite it. The producers' sleep protocol fences in wake_producers() (see push_locked).
    ctl_->head.store(h + rec, std::memory_order_release);
    if (receipt != nullptr)
      std::atomic_ref<std::uint32_t>(ctl_->journal_active).store(0, std::memory_order_release);
    return {QueueStatus::ok, len, h};
  }
}

bool Queue::message_at_head() const noexcept {
  // acquire: pairs with the producer's commit; the sleep protocol's ordering comes from the
  // EventCount (INVARIANT1).
  std::uint64_t h = ctl_->head.load(std::memory_order_acquire);
  return commit_word(h % capacity_).load(std::memory_order_acquire) == h;
}

void Queue::wake_producers() noexcept {
  // Hysteresis (see the header): a sleeping producer is woken once wake_threshold_ bytes are
  // free, which is exactly its own readiness test in push(): it sleeps only after seeing less
  // free, so the free space must reach the threshold (seen here, after our commit of head)
  // before it is ready: no lost wake-up.
  ctl_->space.notify_all_if([&] { return capacity_ - std::min(bytes_used(), capacity_) >= wake_threshold_; },
                            &ctl_->producers);
}

void Queue::wake_consumer() noexcept { ctl_->items.notify_all(&ctl_->consumers); }

QueueResult Queue::try_pop(std::span<std::byte> out, PopReceipt* receipt) noexcept {
  if (receipt != nullptr && !receipt_ok(receipt)) return {QueueStatus::corrupt, 0, 0};
  QueueStatus s = enter(Side::consumer, true, sys::kNoDeadline);
  if (s != QueueStatus::ok) return {s, 0, 0};
  QueueResult r = pop_locked(out, receipt);
  leave(Side::consumer);
  if (r.status == QueueStatus::ok) {
    wake_producers();
    publish_sometimes(ctl_->consumers);
  }
  return r;
}

QueueResult Queue::pop(std::span<std::byte> out, sys::Deadline deadline, PopReceipt* receipt) noexcept {
  if (receipt != nullptr && !receipt_ok(receipt)) return {QueueStatus::corrupt, 0, 0};
  for (;;) {
    QueueStatus s = enter(Side::consumer, false, deadline);
    if (s != QueueStatus::ok) return {s, 0, 0};
    QueueResult r = pop_locked(out, receipt);
    leave(Side::consumer);
    if (r.status == QueueStatus::ok) {
      wake_producers();
      publish_sometimes(ctl_->consumers);
      return r;
    }
    if (r.status != QueueStatus::would_block) return r;
    if (deadline != sys::kNoDeadline && sys::Clock::now() >= deadline)
      return {QueueStatus::timed_out, 0, 0};
    // Looks at the shared lines only every kPollEvery-th spin iteration (one PAUSE each, 25-65 ns
    // here). The line a waiting consumer reads is the very record line the producer is about to
    // write, and every read pulls it back to this core: the producer's next store to it then
    // waits for the line to return, and its commit's locked instruction waits for that store.
    // Polled at every PAUSE, a streaming producer paid that round trip on nearly every message
    // (measured, one producer and one consumer on two cores: 88 ns per message, against 68 at
    // every 4th and 52 at every 64th). The cost is latency: a message pushed into an empty queue
    // is seen up to kPollEvery PAUSEs later (0.1-0.25 us, against 5-10 us for a futex wake-up).
    // (Every push notifies all sleeping consumers, so no wake has to be passed on.)
    auto ready = [&] { return message_at_head() || ctl_->closed.load(std::memory_order_acquire) != 0; };
    (void)await_until(ctl_->items, ready, deadline, pop_spin_, ctl_->consumers, ctl_->producers, kPollEvery);
  }
}

// ---- close and figures -----------------------------------------------------------------------

void Queue::close() noexcept {
  // Under producer_lock, so that no push commits after close() returns (see push_locked). If the
  // lock is unusable the flag is still set: consumers then drain and end.
  QueueStatus s = enter(Side::producer, false, sys::kNoDeadline);
  ctl_->closed.store(1, std::memory_order_seq_cst);
  if (s == QueueStatus::ok) leave(Side::producer);
  // After the store of closed (EventCount INVARIANT1): every announced sleeper wakes and sees it.
  ctl_->items.notify_all(&ctl_->consumers);
  ctl_->space.notify_all(&ctl_->producers);
}

bool Queue::is_closed() const noexcept { return ctl_->closed.load(std::memory_order_acquire) != 0; }

std::uint64_t Queue::bytes_used() const noexcept {
  std::uint64_t h = ctl_->head.load(std::memory_order_acquire);
  std::uint64_t t = ctl_->tail.load(std::memory_order_acquire);
  return t >= h ? t - h : 0;
}

}  // namespace shmkit
