/// Queue: a bounded multi-producer, multi-consumer queue of variable-size messages that lives in
/// shared memory (a segment, or any MAP_SHARED memory that every user maps).
///
/// Design: a byte ring of records with two monotonic 64-bit byte positions, `tail` (end of the last
/// committed record, advanced only by producers) and `head` (start of the oldest unconsumed record,
/// advanced only by consumers). Producers serialise among themselves with one robust Lock and
/// consumers with another (the two-lock queue of Michael & Scott), so a producer and a consumer never
/// contend for a lock. A record is published by its own header: the header's `pos` word (the commit
/// word) is stored last and names the record's position, so a consumer learns that the record at
/// head is there from the record's own cache line (which it must read anyway) and never reads the
/// producers' `tail` line; the producer's lines and the consumer's lines are each touched by one
/// side only, except the record lines themselves. With one producer and one consumer both locks
/// stay uncontended and in their owner's cache.
///
/// Crash safety. Every operation changes the shared state with one committing store made while
/// holding its side's lock (the record's commit word for push, head for pop):
///   * a producer killed before its commit leaves garbage past `tail` that nobody reads (its commit
///     word does not name its position, INVARIANT7) and the next producer overwrites; killed after
///     it, the message is in the queue (delivered exactly once): the next producer, inheriting the
///     lock as owner_died, rolls `tail` forward over the committed record(s) before writing.
///   * a consumer killed before its commit leaves the message at `head` for the next consumer;
///     killed after it, the message was handed to the dead consumer. Pass a PopReceipt (shared
///     memory) to pop() to make that hand-over observable: the receipt is written inside the same
///     critical section, and the next consumer that inherits the lock from a dead owner completes
///     or abandons the pop so that receipt.pos == the message's position iff head moved past it.
///   * the lock of a dead owner is reported by the next acquirer (LockResult::owner_died), which
///     re-validates the shared state, finishes the repair, and marks the lock consistent.
/// A message is "completely pushed" when push()/try_push() returned ok: it is then delivered by
/// exactly one pop that returned ok (or, with a receipt, whose receipt names it), or it is still in
/// the queue.
///
/// Cost (2 vCPU AMD EPYC VM, 64-byte messages, one producer and one consumer process). Without a
/// claim a push is a lock acquire (CAS), the record's stores, the commit (a plain release store),
/// a lock release (CAS) and EventCount::notify_all's fence, plus the robust-list edits of the
/// Lock; a pop likewise: measured 55-70 ns per message between two CPUs before the claims,
/// against 10-12 ns for a bare SPSC ring (spin_ring_limit). With both sides claimed (below) the
/// two CAS per operation and the robust-list edits are gone; what is left per message is the
/// record's line transfer, the commit and head stores and one fence per side (x86: a locked OR on
/// the stack, after which the store buffer is empty). Not yet re-measured on a quiet machine.
///
/// One producer, one consumer: claim the side. A handle that calls claim_producer() (or
/// claim_consumer()) keeps that side's robust lock between operations, so each push (pop) makes
/// no locked instruction at all: the record's stores, its commit (a release store) and a plain
/// load of the other side's EventCount. Other handles of that side wait (or get would_block) until
/// release_*(). The crash story is unchanged: the claim is the same robust Lock, so the kernel
/// reports a claimant's death to the next acquirer (owner_died), which repairs as above.
///
/// Blocking. Every wait goes through shmkit::EventCount (locks/event_count.hpp): `items` is
/// notified by each push, `space` by pops once wake_threshold_ bytes are free. A waiter spins
/// only while the other side runs on another CPU (each side publishes its Presence; see
/// spin_policy.hpp), then sleeps; an operation makes no system call when nobody sleeps. A
/// producer that finds the queue full waits until half the ring (or room for the largest message
/// with its pad, if more) is free: resuming per popped message would make a full queue cost a
/// cache-line ping-pong, or a sleep and a wake-up, per message.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <climits>
#include <cstddef>
#include <cstdint>
#include <span>

#include "shmkit/locks/lock.hpp"
#include "shmkit/locks/event_count.hpp"
#include "shmkit/locks/spin_policy.hpp"
#include "shmkit/sys/futex_word.hpp"

namespace shmkit {

enum class QueueStatus : std::uint8_t {
  ok = 0,
  would_block,       // try_: queue empty (pop) or full (push), or the side's lock is busy
  timed_out,         // the deadline passed
  closed,            // push: the queue is closed; pop: closed and drained (the end)
  too_large,         // push: message longer than max_message
  buffer_too_small,  // pop: the out buffer is smaller than the next message (size = needed)
  not_recoverable,   // a lock of the queue was left unrepaired; the queue is unusable
  corrupt,           // the shared state failed validation (a bug or foreign writes)
};
const char* to_string(QueueStatus s) noexcept;

struct QueueResult {
  QueueStatus status = QueueStatus::ok;
  std::uint32_t size = 0;  // pop: bytes of the message (also when buffer_too_small)
  std::uint64_t pos = 0;   // the message's position: unique within the queue's life
};

/// Written by pop() inside the consumer's critical section: pos of the last message this receipt's
/// consumer took. Lives in shared memory inside the region passed to Queue::attach/create.
struct PopReceipt {
  std::atomic<std::uint64_t> pos{0};  // 0 = none yet (positions start at capacity > 0)
};
static_assert(sizeof(PopReceipt) == 8 && std::atomic<std::uint64_t>::is_always_lock_free);

/// The shared control block; the ring follows it at ring_offset. Exposed for static_asserts and
/// tests; use through Queue.
///
/// INVARIANT1  while the producer lock is held and repaired: head <= tail && tail - head <= capacity
///             (a consumer may take a committed record before its producer advanced tail, so
///             head may pass tail by that record between a commit and the tail store, or until
///             the next producer repairs a dead one's tail)
/// INVARIANT2  head, tail and capacity are multiples of kRecordAlign (64): records are line-aligned
/// INVARIANT3  every record from head up to the first uncommitted position has its commit word
///             (header pos) == its position, kind ∈ {msg, pad}, round64(16 + len) bytes for a msg
///             (len <= max_message), the rest of the ring's lap for a pad; records never straddle
///             the ring's end, so a record starts at ring index 0 in every lap.
/// INVARIANT4  capacity >= 2 * round64(16 + max_message) (a message fits after any pad)
/// INVARIANT5  the record at tail, and tail, change only under producer_lock; head and the journal
///             only under consumer_lock. A push's last shared writes are its commit word (which
///             publishes the record: the consumers' view) then tail (the producers' bookkeeping);
///             a pop's is head, one release store.
/// INVARIANT6  journal_active == 1 => journal_pos == head and *journal_receipt ∈ {old, journal_pos}
/// INVARIANT7  the commit word at ring index tail % capacity != tail unless the record at tail is
///             committed (and then tail is stale: see INVARIANT1); likewise the word at index 0 is
///             != the next multiple of capacity above tail. Kept by create() (index 0 cleared) and
///             by each push, which clears the word at its record's end before committing, unless
///             that word is the live header of the record at head (ring exactly full).
struct QueueControl {
  static constexpr std::uint64_t kMagic = 0x3165756575514b53ULL;  // "SKQueue1"
  static constexpr std::uint32_t kVersion = 3;  // 3: EventCount + Presence wait words

  std::uint64_t magic;
  std::uint32_t version;
  std::uint32_t max_message;
  std::uint64_t capacity;     // ring bytes
  std::uint64_t ring_offset;  // from the start of this control block
  std::uint64_t total_bytes;  // control + ring, as created

  // One line per role, and a line nobody touches between the producers' pair and the consumers'
  // pair: the L2 spatial prefetcher fetches a line's 128-byte buddy along with it, so with
  // `tail` next to the consumers' lock line a producer's store to tail had to fetch the line
  // back from the consumer's core (measured with the old layout: a push that stored tail
  // before its commit took 190 ns per message instead of 55). The base is only 64-byte
  // aligned, so the spacer lines separate the pairs for either parity.
  alignas(64) Lock producer_lock;                     // line 1: producers only
  alignas(64) std::atomic<std::uint64_t> tail;        // line 2: producers only (and monitoring)
  alignas(64) std::uint64_t spacer_p[8];              // line 3: never touched
  alignas(64) Lock consumer_lock;                     // line 4: consumers only
  std::uint64_t journal_pos;                          // under consumer_lock
  std::int64_t journal_receipt_rel;                   // receipt address - this address
  std::uint32_t journal_active;
  alignas(64) std::atomic<std::uint64_t> head;        // line 5: consumers (producers read it when full)
  alignas(64) std::uint64_t spacer_c[8];              // line 6: never touched
  // Lines 7-9 are read on every operation by one side and written rarely (a sleeper announcing
  // itself, a process migrating to another CPU, close), so they stay cached on both sides. The
  // Presence words live here, not beside tail/head: a consumer reading a hint on the tail line
  // before each wait made every push's tail store fetch the line back (measured: 95 ns per
  // message instead of 72).
  alignas(64) EventCount items;                       // line 7: notified by every push (and close)
  std::uint32_t reserved_items;
  Presence producers;                                 // what producers do now (hint)
  alignas(64) std::atomic<std::uint32_t> closed;      // line 8: read by every push
  alignas(64) EventCount space;                       // line 9: notified when wake_threshold_ is free
  std::uint32_t reserved_space;
  Presence consumers;                                 // what consumers do now (hint)
};
static_assert(std::is_standard_layout_v<QueueControl>, "QueueControl lives in shared memory");
static_assert(offsetof(QueueControl, producer_lock) == 64 && offsetof(QueueControl, tail) == 128 &&
                  offsetof(QueueControl, consumer_lock) == 256 && offsetof(QueueControl, head) == 320 &&
                  offsetof(QueueControl, items) == 448 && offsetof(QueueControl, closed) == 512 &&
                  offsetof(QueueControl, space) == 576,
              "one line per role, spacer lines between the producers' and the consumers' lines");
static_assert(sizeof(QueueControl) % 64 == 0);

/// A process-local handle on a queue in shared memory. Cheap to copy; thread-safe like the queue.
class Queue {
 public:
  static constexpr std::size_t kRecordHeader = 16;
  /// Records start on cache-line boundaries so that the producer writing the next record never
  /// shares a line with the consumer reading the previous one (measured: 80-byte records packed at
  /// 16-byte alignment made a 64-byte message cost about 2x as much between two cores).
  static constexpr std::size_t kRecordAlign = 64;
  /// Bytes of shared memory a queue with `ring_bytes` of ring needs (control block + ring).
  static std::size_t required_bytes(std::size_t ring_bytes) noexcept;
  /// The smallest ring that holds max_message (INVARIANT4).
  static std::size_t min_ring_bytes(std::uint32_t max_message) noexcept;

  /// Constructs a queue in [mem, mem+bytes) (mem 64-byte aligned, zero or garbage). The ring gets
  /// all space after the control block, rounded down to 64. `receipt_region` is the memory where
  /// PopReceipts may live (usually the whole segment); empty = receipts refused. Throws
  /// shmkit::Error(invalid_argument) when bytes cannot hold max_message twice.
  static Queue create(void* mem, std::size_t bytes, std::uint32_t max_message,
                      std::span<std::byte> receipt_region = {});
  /// A handle on a queue created by create() (in this or another process). Validates the control
  /// block against `bytes`; throws Error(not_a_segment / corrupt) when it does not look right.
  static Queue attach(void* mem, std::size_t bytes, std::span<std::byte> receipt_region = {});

  Queue() = default;
  Queue(const Queue& o) noexcept { *this = o; }
  Queue& operator=(const Queue& o) noexcept {
    ctl_ = o.ctl_;
    ring_ = o.ring_;
    capacity_ = o.capacity_;
    max_message_ = o.max_message_;
    receipt_region_ = o.receipt_region_;
    push_spin_ = o.push_spin_;
    pop_spin_ = o.pop_spin_;
    claimed_producer_ = false;  // a claim belongs to the handle (and thread) that made it
    claimed_consumer_ = false;
    wake_threshold_ = o.wake_threshold_;
    cached_head_.store(o.cached_head_.load(std::memory_order_relaxed), std::memory_order_relaxed);
    return *this;
  }

  /// -- producers --
  /// Blocks (spin, then futex) while the queue is full, until `deadline`.
  QueueResult push(std::span<const std::byte> msg, sys::Deadline deadline = sys::kNoDeadline) noexcept;
  /// Never blocks: would_block when full or when another producer holds the producer lock.
  [[nodiscard]] QueueResult try_push(std::span<const std::byte> msg) noexcept;

  /// -- consumers --
  /// Copies the oldest message into `out`. Blocks while empty and open, until `deadline`; after
  /// close() it drains what is left and then returns closed. With `receipt`, receipt->pos is set to
  /// the message's position in the same critical section (see the header comment).
  QueueResult pop(std::span<std::byte> out, sys::Deadline deadline = sys::kNoDeadline,
                  PopReceipt* receipt = nullptr) noexcept;
  [[nodiscard]] QueueResult try_pop(std::span<std::byte> out, PopReceipt* receipt = nullptr) noexcept;

  /// After close() pushes fail with closed; pops drain, then return closed. Wakes every sleeper.
  void close() noexcept;
  bool is_closed() const noexcept;

  /// Approximate (racy) figures for monitoring. bytes_used() counts up to tail, which may lag one
  /// committed record behind while a producer pushes (or until a dead producer is repaired);
  /// empty() also looks for that record.
  std::uint64_t bytes_used() const noexcept;
  bool empty() const noexcept { return bytes_used() == 0 && !message_at_head(); }
  std::uint32_t max_message() const noexcept { return ctl_->max_message; }
  QueueControl* control() const noexcept { return ctl_; }

  /// The longest a waiter of this handle spins before it sleeps (it spins only while the other
  /// side runs on another CPU; spin_policy.hpp). 0 = sleep at once. Local to this handle.
  void set_spin(std::chrono::nanoseconds max) noexcept {
    const auto ns = static_cast<std::uint32_t>(std::min<std::int64_t>(max.count() < 0 ? 0 : max.count(), UINT32_MAX));
    push_spin_.set_max_ns(ns);
    pop_spin_.set_max_ns(ns);
  }

  /// -- one producer / one consumer (see the header comment) --
  /// Takes the producer lock for this handle until release_producer(): pushes through this handle
  /// then make no locked instruction. Call from the thread that pushes (the lock is robust per
  /// thread). ok, timed_out, not_recoverable or corrupt (a dead holder's state failed repair).
  /// While claimed, other handles' pushes wait, and close() through another handle waits for the
  /// release (no push may commit after close() returns): close through the claiming handle.
  [[nodiscard]] QueueStatus claim_producer(sys::Deadline deadline = sys::kNoDeadline) noexcept {
    return claim(Side::producer, deadline);
  }
  void release_producer() noexcept { release(Side::producer); }
  [[nodiscard]] QueueStatus claim_consumer(sys::Deadline deadline = sys::kNoDeadline) noexcept {
    return claim(Side::consumer, deadline);
  }
  void release_consumer() noexcept { release(Side::consumer); }

 private:
  enum class Side { producer, consumer };
  QueueStatus lock_side(Side side, bool try_only, sys::Deadline deadline) noexcept;
  QueueStatus enter(Side side, bool try_only, sys::Deadline deadline) noexcept;  // lock unless claimed
  void leave(Side side) noexcept;                                                 // unlock unless claimed
  QueueStatus claim(Side side, sys::Deadline deadline) noexcept;
  void release(Side side) noexcept;
  bool& claimed(Side side) noexcept { return side == Side::producer ? claimed_producer_ : claimed_consumer_; }
  QueueStatus lock_side_slow(Side side, LockResult r) noexcept;  // owner death, timeouts, busy
  void unlock_side(Side side) noexcept;
  bool repair_producer() noexcept;
  bool repair_consumer() noexcept;
  QueueResult push_locked(std::span<const std::byte> msg) noexcept;
  QueueResult pop_locked(std::span<std::byte> out, PopReceipt* receipt) noexcept;
  bool receipt_ok(const void* r) const noexcept;
  std::atomic_ref<std::uint64_t> commit_word(std::uint64_t idx) const noexcept;
  void read_len_kind(std::uint64_t idx, std::uint32_t& len, std::uint32_t& kind) const noexcept;
  void write_len_kind(std::uint64_t idx, std::uint32_t len, std::uint32_t kind) noexcept;
  bool message_at_head() const noexcept;
  void wake_producers() noexcept;
  void wake_consumer() noexcept;
  std::byte* ring() const noexcept { return ring_; }

  QueueControl* ctl_ = nullptr;
  std::byte* ring_ = nullptr;
  std::uint64_t capacity_ = 0;  // local copy: never trusted from shared memory after attach
  std::uint32_t max_message_ = 0;
  std::span<std::byte> receipt_region_;
  SpinPolicy push_spin_;
  SpinPolicy pop_spin_;
  bool claimed_producer_ = false;  // this handle holds producer_lock between operations
  bool claimed_consumer_ = false;
  std::uint64_t wake_threshold_ = 0;  // free bytes at which a consumer wakes sleeping producers
  /// A lower bound of head seen by this handle, read and written only under the producer lock
  /// (atomic only so that copying a handle is not a data race).
  std::atomic<std::uint64_t> cached_head_{0};
};

}  // namespace shmkit
