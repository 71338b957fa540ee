#include "shmkit/transport/queue.hpp"

#include <algorithm>
#include <cstring>
#include <new>

#include "shmkit/sys/error.hpp"
#include "shmkit/sys/proc_control.hpp"

namespace shmkit::transport {

namespace {

enum : std::uint32_t { kKindMsg = 0x4d53u, kKindPad = 0x5044u };

// The 16-byte header in front of every record (INVARIANT3).
struct RecordHeader {
  std::uint32_t len;   // message bytes (0 for a pad)
  std::uint32_t kind;  // kKindMsg or kKindPad
  std::uint64_t pos;   // the record's own position: catches a stale or misplaced record
};
static_assert(sizeof(RecordHeader) == Queue::kRecordHeader);

constexpr std::uint64_t kAlign = Queue::kRecordAlign;
constexpr std::uint64_t round_align(std::uint64_t n) noexcept { return (n + kAlign - 1) & ~(kAlign - 1); }
constexpr std::uint64_t record_bytes(std::uint64_t len) noexcept { return round_align(Queue::kRecordHeader + len); }

// How long a sleeper sleeps at most before looking again. Wake-ups are exact (futex), so this is
// only a safety net for a waker that died between its commit and its wake.
constexpr auto kSleepSlice = std::chrono::milliseconds(50);

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
  // Publishes the whole block: an attacher that sees the magic (acquire) sees the fields above.
  std::atomic_ref<std::uint64_t>(c->magic).store(QueueControl::kMagic, std::memory_order_release);
  return attach(mem, bytes, receipt_region);
}

Queue Queue::attach(void* mem, std::size_t bytes, std::span<std::byte> receipt_region) {
  if (mem == nullptr || reinterpret_cast<std::uintptr_t>(mem) % 64 != 0 || bytes < sizeof(QueueControl))
    throw Error(Errc::invalid_argument, "Queue::attach: memory must be 64-byte aligned and hold a QueueControl");
  auto* c = static_cast<QueueControl*>(mem);
  if (std::atomic_ref<std::uint64_t>(c->magic).load(std::memory_order_acquire) != QueueControl::kMagic)
    throw Error(Errc::not_a_segment, "Queue::attach: no queue at this address (magic mismatch)");
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

// ---- locking and repair ----------------------------------------------------------------------

QueueStatus Queue::lock_side(Side side, bool try_only, sys::Deadline deadline) noexcept {
  Lock& l = side == Side::producer ? ctl_->producer_lock : ctl_->consumer_lock;
  LockResult r = try_only ? l.try_acquire() : l.acquire(deadline);
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

bool Queue::repair_producer() noexcept {
  // Nothing a dead producer wrote past `tail` is visible; only check INVARIANT1/2.
  std::uint64_t t = ctl_->tail.load(std::memory_order_acquire);
  std::uint64_t h = ctl_->head.load(std::memory_order_acquire);
  return h <= t && t - h <= capacity_ && t % kAlign == 0;
}

bool Queue::receipt_ok(const void* r) const noexcept {
  auto a = reinterpret_cast<std::uintptr_t>(r);
  auto lo = reinterpret_cast<std::uintptr_t>(receipt_region_.data());
  return !receipt_region_.empty() && a % alignof(PopReceipt) == 0 && a >= lo &&
         a - lo <= receipt_region_.size() - sizeof(PopReceipt) && receipt_region_.size() >= sizeof(PopReceipt);
}

bool Queue::repair_consumer() noexcept {
  std::uint64_t h = ctl_->head.load(std::memory_order_acquire);
  std::uint64_t t = ctl_->tail.load(std::memory_order_acquire);
  if (!(h <= t && t - h <= capacity_ && h % kAlign == 0)) return false;
  auto active = std::atomic_ref<std::uint32_t>(ctl_->journal_active);
  if (active.load(std::memory_order_acquire) == 0) return true;
  // INVARIANT6: a pop with a receipt was in flight. If its receipt already names the message at
  // head, the dead consumer received it: finish the commit. Otherwise the message stays.
  std::uint64_t jpos = std::atomic_ref<std::uint64_t>(ctl_->journal_pos).load(std::memory_order_acquire);
  std::int64_t rel = std::atomic_ref<std::int64_t>(ctl_->journal_receipt_rel).load(std::memory_order_acquire);
  auto* receipt = reinterpret_cast<PopReceipt*>(reinterpret_cast<std::uintptr_t>(ctl_) +
                                                static_cast<std::uintptr_t>(rel));
  if (jpos == h && h != t && receipt_ok(receipt) &&
      receipt->pos.load(std::memory_order_acquire) == jpos) {
    RecordHeader rh;
    std::memcpy(&rh, ring_ + h % capacity_, sizeof rh);
    std::uint64_t rec = record_bytes(rh.len);
    if (rh.pos != h || rh.kind != kKindMsg || rh.len > max_message_ || rec > t - h) return false;
    ctl_->head.store(h + rec, std::memory_order_release);
  }
  // A receipt outside this process's receipt region cannot be checked: the message stays in the
  // queue (delivered again rather than lost).
  active.store(0, std::memory_order_release);
  return true;
}

// ---- push ------------------------------------------------------------------------------------

QueueResult Queue::push_locked(std::span<const std::byte> msg) noexcept {
  // closed is read under producer_lock: close() sets it under the same lock, so no push commits
  // after close() returned (consumers that saw closed then see the final tail).
  if (ctl_->closed.load(std::memory_order_acquire) != 0) return {QueueStatus::closed, 0, 0};
  // tail is ours (INVARIANT5); head is the consumers': the acquire load below pairs with their
  // release store so their reads of the bytes we are about to overwrite have finished (a cached
  // value was loaded the same way, by this handle, under this lock).
  std::uint64_t t = ctl_->tail.load(std::memory_order_relaxed);
  std::uint64_t rec = record_bytes(msg.size());
  std::uint64_t idx = t % capacity_;
  std::uint64_t to_end = capacity_ - idx;
  std::uint64_t pad = rec > to_end ? to_end : 0;  // records never straddle the end (INVARIANT3)
  // First against the cached head (a lower bound: head only grows), so that the line the
  // consumers write on every pop is read only when the ring looks full.
  std::uint64_t h = cached_head_.load(std::memory_order_relaxed);
  if (h > t || t - h > capacity_ || pad + rec > capacity_ - (t - h)) {
    h = ctl_->head.load(std::memory_order_acquire);
    if (!(h <= t && t - h <= capacity_ && t % kAlign == 0)) return {QueueStatus::corrupt, 0, 0};
    cached_head_.store(h, std::memory_order_relaxed);
    if (pad + rec > capacity_ - (t - h)) return {QueueStatus::would_block, 0, 0};
  }
  if (pad != 0) {
    RecordHeader ph{0, kKindPad, t};
    std::memcpy(ring_ + idx, &ph, sizeof ph);
    idx = 0;
  }
  std::uint64_t pos = t + pad;
  RecordHeader rh{static_cast<std::uint32_t>(msg.size()), kKindMsg, pos};
  std::memcpy(ring_ + idx, &rh, sizeof rh);
  if (!msg.empty()) std::memcpy(ring_ + idx + sizeof rh, msg.data(), msg.size());
  // The commit (INVARIANT5). seq_cst: ordered before the load of consumers_armed in
  // wake_consumer(), the other half of the sleep protocol in wait_until() (a consumer arms, then
  // re-reads tail).
  ctl_->tail.store(pos + rec, std::memory_order_seq_cst);
  return {QueueStatus::ok, static_cast<std::uint32_t>(msg.size()), pos};
}

QueueResult Queue::try_push(std::span<const std::byte> msg) noexcept {
  if (msg.size() > max_message_) return {QueueStatus::too_large, 0, 0};
  QueueStatus s = lock_side(Side::producer, true, sys::kNoDeadline);
  if (s != QueueStatus::ok) return {s, 0, 0};
  QueueResult r = push_locked(msg);
  unlock_side(Side::producer);
  if (r.status == QueueStatus::ok) wake_consumer();
  return r;
}

namespace {

// Spins, then sleeps on `word` until ready() or the deadline. The sleeper protocol: read the
// word, arm (seq_cst store), re-check ready() (seq_cst loads inside), then sleep only if the word
// still holds what we read. A waker stores its commit (seq_cst), then reads `armed` (seq_cst); if
// armed it clears it, bumps the word and wakes. In the single total order either the waker sees
// our arming, or our re-check sees its commit; a bump after our read of the word makes the
// futex_wait return at once. No lost wake-up.
template <class Ready>
void wait_until(std::atomic<std::uint32_t>& word, std::atomic<std::uint32_t>& armed, Ready ready,
                AdaptiveSpin& spin, sys::Deadline deadline) noexcept {
  if (spin.spin(ready)) return;
  std::uint32_t seen = word.load(std::memory_order_seq_cst);
  armed.store(1, std::memory_order_seq_cst);
  if (!ready()) {
    auto t0 = sys::Clock::now();
    (void)sys::futex_wait(word, seen, std::min(deadline, t0 + kSleepSlice));
    if (ready()) spin.learn_slow_wait(sys::Clock::now() - t0);
  }
}

// The waker's half: one FUTEX_WAKE per arming.
bool disarm(std::atomic<std::uint32_t>& armed) noexcept {
  return armed.load(std::memory_order_seq_cst) != 0 && armed.exchange(0, std::memory_order_seq_cst) != 0;
}

}  // namespace

QueueResult Queue::push(std::span<const std::byte> msg, sys::Deadline deadline) noexcept {
  if (msg.size() > max_message_) return {QueueStatus::too_large, 0, 0};
  for (;;) {
    QueueStatus s = lock_side(Side::producer, false, deadline);
    if (s != QueueStatus::ok) return {s, 0, 0};
    QueueResult r = push_locked(msg);
    unlock_side(Side::producer);
    if (r.status == QueueStatus::ok) {
      wake_consumer();
      return r;
    }
    if (r.status != QueueStatus::would_block) return r;
    if (deadline != sys::kNoDeadline && sys::Clock::now() >= deadline)
      return {QueueStatus::timed_out, 0, 0};
    // Full: wait until wake_threshold_ bytes are free (or the queue closes). That is at least
    // room for the message and any pad (2 * max record <= threshold), and waiting for more than
    // "it fits" turns a full queue from a per-message ping-pong of the head line between the two
    // cores into bursts (measured: several times the throughput with one producer and consumer).
    auto ready = [&] {
      std::uint64_t t = ctl_->tail.load(std::memory_order_seq_cst);
      std::uint64_t h = ctl_->head.load(std::memory_order_seq_cst);
      return ctl_->closed.load(std::memory_order_seq_cst) != 0 || t < h ||
             capacity_ - std::min(capacity_, t - h) >= wake_threshold_;
    };
    wait_until(ctl_->not_full, ctl_->producers_armed, ready, push_spin_, deadline);
  }
}

// ---- pop -------------------------------------------------------------------------------------

QueueResult Queue::pop_locked(std::span<std::byte> out, PopReceipt* receipt) noexcept {
  std::uint64_t h = ctl_->head.load(std::memory_order_relaxed);  // ours (INVARIANT5)
  for (;;) {
    // The cached tail is a lower bound (tail only grows) loaded with acquire by this handle under
    // this lock, so the records below it are visible; the producers' line is read again only
    // when the cache is used up.
    std::uint64_t t = cached_tail_.load(std::memory_order_relaxed);
    if (t <= h || t - h > capacity_) {
      // closed before tail: see push_locked. tail acquire pairs with the producer's commit.
      bool closed = ctl_->closed.load(std::memory_order_acquire) != 0;
      t = ctl_->tail.load(std::memory_order_acquire);
      if (!(h <= t && t - h <= capacity_ && h % kAlign == 0)) return {QueueStatus::corrupt, 0, 0};
      cached_tail_.store(t, std::memory_order_relaxed);
      if (h == t) return {closed ? QueueStatus::closed : QueueStatus::would_block, 0, 0};
    }
    std::uint64_t idx = h % capacity_;
    RecordHeader rh;
    std::memcpy(&rh, ring_ + idx, sizeof rh);
    if (rh.pos != h) return {QueueStatus::corrupt, 0, 0};
    if (rh.kind == kKindPad) {
      std::uint64_t skip = capacity_ - idx;
      if (skip > t - h) return {QueueStatus::corrupt, 0, 0};
      // Skipping a pad is its own commit: it carries no message.
      h += skip;
      ctl_->head.store(h, std::memory_order_release);
      continue;
    }
    std::uint64_t rec = record_bytes(rh.len);
    if (rh.kind != kKindMsg || rh.len > max_message_ || rec > t - h || rec > capacity_ - idx)
      return {QueueStatus::corrupt, 0, 0};
    if (rh.len > out.size()) return {QueueStatus::buffer_too_small, rh.len, h};
    if (rh.len != 0) std::memcpy(out.data(), ring_ + idx + sizeof rh, rh.len);
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
    // The commit (INVARIANT5); seq_cst for the producers' sleep protocol (see push_locked).
    ctl_->head.store(h + rec, std::memory_order_seq_cst);
    if (receipt != nullptr)
      std::atomic_ref<std::uint32_t>(ctl_->journal_active).store(0, std::memory_order_release);
    return {QueueStatus::ok, rh.len, h};
  }
}

void Queue::wake_producers() noexcept {
  // seq_cst load: the other half of the producers' sleep protocol (wait_until), after our
  // seq_cst commit of head.
  if (ctl_->producers_armed.load(std::memory_order_seq_cst) == 0) return;
  std::uint64_t used = bytes_used();
  // Hysteresis (see the header): a sleeping producer is woken once wake_threshold_ bytes are
  // free, which is exactly its own readiness test in push(): it sleeps only after seeing less
  // free, so the free space must reach the threshold (seen here) before it is ready: no lost
  // wake-up. The 50 ms slice backs this up.
  if (capacity_ - std::min(used, capacity_) < wake_threshold_ || !disarm(ctl_->producers_armed)) return;
  ctl_->not_full.fetch_add(1, std::memory_order_seq_cst);
  sys::futex_wake_all(ctl_->not_full);  // all: each producer re-checks whether its message fits
}

void Queue::wake_consumer() noexcept {
  if (!disarm(ctl_->consumers_armed)) return;
  ctl_->not_empty.fetch_add(1, std::memory_order_seq_cst);
  sys::futex_wake(ctl_->not_empty, 1);
}

QueueResult Queue::try_pop(std::span<std::byte> out, PopReceipt* receipt) noexcept {
  if (receipt != nullptr && !receipt_ok(receipt)) return {QueueStatus::corrupt, 0, 0};
  QueueStatus s = lock_side(Side::consumer, true, sys::kNoDeadline);
  if (s != QueueStatus::ok) return {s, 0, 0};
  QueueResult r = pop_locked(out, receipt);
  unlock_side(Side::consumer);
  if (r.status == QueueStatus::ok) wake_producers();
  return r;
}

QueueResult Queue::pop(std::span<std::byte> out, sys::Deadline deadline, PopReceipt* receipt) noexcept {
  if (receipt != nullptr && !receipt_ok(receipt)) return {QueueStatus::corrupt, 0, 0};
  for (;;) {
    QueueStatus s = lock_side(Side::consumer, false, deadline);
    if (s != QueueStatus::ok) return {s, 0, 0};
    QueueResult r = pop_locked(out, receipt);
    unlock_side(Side::consumer);
    if (r.status == QueueStatus::ok) {
      wake_producers();
      // Pass the wake on: the producer woke one sleeper per arming; if messages remain, another
      // armed consumer may take them in parallel. (armed first: it is rarely written, tail is
      // written by every push.)
      if (ctl_->consumers_armed.load(std::memory_order_relaxed) != 0 && !empty()) wake_consumer();
      return r;
    }
    if (r.status != QueueStatus::would_block) return r;
    if (deadline != sys::kNoDeadline && sys::Clock::now() >= deadline)
      return {QueueStatus::timed_out, 0, 0};
    auto ready = [&] {
      return ctl_->tail.load(std::memory_order_seq_cst) != ctl_->head.load(std::memory_order_seq_cst) ||
             ctl_->closed.load(std::memory_order_seq_cst) != 0;
    };
    wait_until(ctl_->not_empty, ctl_->consumers_armed, ready, pop_spin_, deadline);
  }
}

// ---- close and figures -----------------------------------------------------------------------

void Queue::close() noexcept {
  // Under producer_lock, so that no push commits after close() returns (see push_locked). If the
  // lock is unusable the flag is still set: consumers then drain and end.
  QueueStatus s = lock_side(Side::producer, false, sys::kNoDeadline);
  ctl_->closed.store(1, std::memory_order_seq_cst);
  if (s == QueueStatus::ok) unlock_side(Side::producer);
  ctl_->not_empty.fetch_add(1, std::memory_order_seq_cst);
  ctl_->not_full.fetch_add(1, std::memory_order_seq_cst);
  sys::futex_wake_all(ctl_->not_empty);
  sys::futex_wake_all(ctl_->not_full);
}

bool Queue::is_closed() const noexcept { return ctl_->closed.load(std::memory_order_acquire) != 0; }

std::uint64_t Queue::bytes_used() const noexcept {
  std::uint64_t h = ctl_->head.load(std::memory_order_acquire);
  std::uint64_t t = ctl_->tail.load(std::memory_order_acquire);
  return t >= h ? t - h : 0;
}

}  // namespace shmkit::transport
