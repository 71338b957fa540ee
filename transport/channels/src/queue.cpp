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

// How long a sleeper sleeps at most before looking again. Wake-ups are exact (futex), so this is
// only a safety net for a waker that died between its commit and its wake.
constexpr auto kSleepSlice = std::chrono::milliseconds(50);

// A waiting consumer reads the record line at head every kPollEvery-th spin iteration (see pop()).
constexpr std::uint32_t kPollEvery = 4;

// Placement hints (queue.hpp, "Placement"): 1 + the CPU, 0 = unknown. relaxed everywhere: a hint
// steers spinning only, and a stale value is as good as any.
std::int32_t cpu_hint() noexcept { return sys::current_cpu() + 1; }

void note_cpu(std::atomic<std::int32_t>& word, std::int32_t cpu) noexcept {
  if (cpu > 0 && word.load(std::memory_order_relaxed) != cpu) word.store(cpu, std::memory_order_relaxed);
}

// Every 64th operation of this thread (the first one included) notes the CPU: migrations are
// rare, and asking costs about 5 ns.
constinit thread_local std::uint32_t tl_ops = 0;
void note_cpu_sometimes(std::atomic<std::int32_t>& word) noexcept {
  if ((tl_ops++ & 63) == 0) note_cpu(word, cpu_hint());
}

// Whether a waiter should spin: not when the partner side last ran on this very CPU.
bool partner_elsewhere(std::atomic<std::int32_t>& mine, const std::atomic<std::int32_t>& partner) noexcept {
  std::int32_t me = cpu_hint();
  note_cpu(mine, me);
  return me <= 0 || partner.load(std::memory_order_relaxed) != me;
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
  // The sleep protocol's store-load ordering (commit before the load of consumers_armed) comes
  // from the fence in wake_consumer(), made after the unlock: a seq_cst store here (an XCHG)
  // was a second locked instruction per push waiting for the record's lines (measured: 71 ns
  // per message between two CPUs with it, 62 without).
  commit_word(idx).store(pos, std::memory_order_release);
  // Producers' own bookkeeping (INVARIANT1); consumers never read it on their path.
  // release: bytes_used() and producers' waits read it without the lock.
  ctl_->tail.store(end, std::memory_order_release);
  return {QueueStatus::ok, static_cast<std::uint32_t>(msg.size()), pos};
}

QueueResult Queue::try_push(std::span<const std::byte> msg) noexcept {
  if (msg.size() > max_message_) return {QueueStatus::too_large, 0, 0};
  QueueStatus s = lock_side(Side::producer, true, sys::kNoDeadline);
  if (s != QueueStatus::ok) return {s, 0, 0};
  QueueResult r = push_locked(msg);
  unlock_side(Side::producer);
  if (r.status == QueueStatus::ok) {
    wake_consumer();
    note_cpu_sometimes(ctl_->producer_cpu);
  }
  return r;
}

namespace {

// Spins, then sleeps on `word` until ready() or the deadline. The sleeper protocol: read the
// word, arm (seq_cst store), fence, re-check ready() (seq_cst loads inside), then sleep only if
// the word still holds what we read. A waker stores its commit (release), fences (seq_cst), then
// reads `armed`; if armed it clears it, bumps the word and wakes. With a seq_cst fence between
// the store and the load on both sides, either the waker sees our arming or our re-check sees its
// commit; a bump after our read of the word makes the futex_wait return at once. No lost wake-up.
// While spinning, ready() is evaluated only every poll_every-th iteration (see pop()); the
// re-check after arming always evaluates it. may_spin false (the partner runs on this CPU): no
// spin, and nothing learnt from the sleep.
template <class Ready>
void wait_until(std::atomic<std::uint32_t>& word, std::atomic<std::uint32_t>& armed, Ready ready,
                AdaptiveSpin& spin, sys::Deadline deadline, bool may_spin, std::uint32_t poll_every = 1) noexcept {
  std::uint32_t polls = 0;
  if (may_spin && spin.spin([&] { return ++polls % poll_every == 0 && ready(); })) return;
  std::uint32_t seen = word.load(std::memory_order_seq_cst);
  armed.store(1, std::memory_order_seq_cst);
  // Pairs with the fence at the top of wake_consumer()/wake_producers(): the waker stores its
  // commit, fences, loads armed; we store armed, fence, load the commit (ready()). One of the
  // two loads sees the other side's store (store-buffering forbidden between seq_cst fences).
  std::atomic_thread_fence(std::memory_order_seq_cst);
  if (!ready()) {
    auto t0 = sys::Clock::now();
    (void)sys::futex_wait(word, seen, std::min(deadline, t0 + kSleepSlice));
    if (may_spin && ready()) spin.learn_slow_wait(sys::Clock::now() - t0);
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
      note_cpu_sometimes(ctl_->producer_cpu);
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
    wait_until(ctl_->not_full, ctl_->producers_armed, ready, push_spin_, deadline,
               partner_elsewhere(ctl_->producer_cpu, ctl_->consumer_cpu));
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
  // seq_cst: used in the consumers' sleep protocol (wait_until's re-check after arming).
  std::uint64_t h = ctl_->head.load(std::memory_order_seq_cst);
  return commit_word(h % capacity_).load(std::memory_order_seq_cst) == h;
}

void Queue::wake_producers() noexcept {
  // Pairs with the fence in wait_until() after a producer arms: orders our commit of head before
  // the load of producers_armed. After the unlock's locked instruction the store buffer is empty,
  // so this costs little.
  std::atomic_thread_fence(std::memory_order_seq_cst);
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
  // Pairs with the fence in wait_until() after a consumer arms: orders the commit word we stored
  // (push_locked) before the load of consumers_armed in disarm().
  std::atomic_thread_fence(std::memory_order_seq_cst);
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
  if (r.status == QueueStatus::ok) {
    wake_producers();
    note_cpu_sometimes(ctl_->consumer_cpu);
  }
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
      // armed consumer may take them in parallel. (armed first, relaxed: it is rarely written and
      // only a hint here; a wake it misses is covered by the sleeper's own protocol.)
      if (ctl_->consumers_armed.load(std::memory_order_relaxed) != 0 && message_at_head()) wake_consumer();
      note_cpu_sometimes(ctl_->consumer_cpu);
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
    auto ready = [&] { return message_at_head() || ctl_->closed.load(std::memory_order_seq_cst) != 0; };
    wait_until(ctl_->not_empty, ctl_->consumers_armed, ready, pop_spin_, deadline,
               partner_elsewhere(ctl_->consumer_cpu, ctl_->producer_cpu), kPollEvery);
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

}  // namespace shmkit
