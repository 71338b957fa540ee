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
/// Cost. A push is a lock acquire (CAS), the record's stores, the commit (a plain release store),
/// a lock release (CAS) and a fence for the sleep protocol (cheap right after the CAS), plus the
/// robust-list edits of the Lock; a pop likewise. Between two CPUs the release CAS waits for the
/// record's stores, and the record lines were last held by the other core (the consumer reads
/// right behind the producer, and its polls pull back the very line being written): about one
/// cross-core transfer per message is serialised, several times a bare SPSC ring with no locked
/// instruction (figures in docs/PERFORMANCE_NOTES.md). Getting near the ring needs pushes and pops with no per-message locked instruction, e.g. a lane per
/// producer handle whose robust ownership is taken once per handle (the kernel's robust list
/// still reports a holder's death), consumers claiming lanes the same way, and an asymmetric
/// fence (membarrier) on the sleeper's side in place of the waker's per-message fence.
///
/// Placement. A waiter spins only when the other side last ran on another CPU: each side notes its
/// CPU in the control block (every 64th operation of a thread, and before each wait), and a waiter
/// that finds its partner on its own CPU sleeps at once (spinning there only burns the time slice
/// the partner needs to make progress). A stale or wrong hint costs a spin or a sleep, never a message.
///
/// Blocking. push/pop spin briefly (adaptively, channel_spin.hpp) and then sleep on a futex word
/// with the deadline. A sleeper arms a flag before it sleeps; a waker that finds it armed clears it
/// and makes the one FUTEX_WAKE, so an operation makes no system call when nobody sleeps and only
/// one per sleep (a count of sleepers would make every operation between the wake and the
/// sleeper's getting the CPU pay a system call; a consumer that pops and sees more messages passes
/// the wake on to the next sleeper). A sleeper killed while armed costs one spurious wake; a second
/// sleeper whose arming was consumed by the first one's wake sleeps until the next arming's wake or
/// its 50 ms slice (latency for that consumer, never a lost message). A producer that finds the
/// queue full waits (spinning, then sleeping) until half the ring (or room for the largest message
/// with its pad, if more) is free, and consumers wake sleeping producers at that point: resuming
/// per popped message would make a full queue cost a cache-line ping-pong, or a sleep and a
/// wake-up, per message.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <span>

#include "shmkit/locks/lock.hpp"
#include "shmkit/sys/futex_word.hpp"
#include "shmkit/channels/channel_spin.hpp"

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
  static constexpr std::uint32_t kVersion = 2;  // 2: commit word in the record header, new layout

  std::uint64_t magic;
  std::uint32_t version;
  std::uint32_t max_message;
  std::uint64_t capacity;     // ring bytes
  std::uint64_t ring_offset;  // from the start of this control block
  std::uint64_t total_bytes;  // control + ring, as created

  // One line per role, and a line nobody touches between the producers' pair and the consumers'
  // pair: the L2 spatial prefetcher fetches a line's 128-byte buddy along with it, so with
  // `tail` next to the consumers' lock line a producer's store to tail had to fetch the line
  // back from the consumer's core (over three times the cost per message; see
  // docs/PERFORMANCE_NOTES.md). The base is only 64-byte
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
  // Lines 7-9 are read on every operation by one side and written rarely (a sleeper arming, a
  // process migrating to another CPU, close), so they stay cached on both sides. The placement
  // hints live here, not beside tail/head: a consumer reading a hint on the tail line before
  // each wait made every push's tail store fetch the line back.
  alignas(64) std::atomic<std::uint32_t> not_empty;   // line 7: futex word, bumped when items appear
  std::atomic<std::uint32_t> consumers_armed;         // 1: a consumer may sleep on not_empty
  std::atomic<std::int32_t> producer_cpu;             // hint: 1 + CPU of a producer lately, 0 = unknown
  alignas(64) std::atomic<std::uint32_t> closed;      // line 8: read by every push
  alignas(64) std::atomic<std::uint32_t> not_full;    // line 9: futex word, bumped when space appears
  std::atomic<std::uint32_t> producers_armed;         // 1: a producer may sleep on not_full
  std::atomic<std::int32_t> consumer_cpu;             // hint: 1 + CPU of a consumer lately, 0 = unknown
};
static_assert(std::is_standard_layout_v<QueueControl>, "QueueControl lives in shared memory");
static_assert(offsetof(QueueControl, producer_lock) == 64 && offsetof(QueueControl, tail) == 128 &&
                  offsetof(QueueControl, consumer_lock) == 256 && offsetof(QueueControl, head) == 320 &&
                  offsetof(QueueControl, not_empty) == 448 && offsetof(QueueControl, closed) == 512 &&
                  offsetof(QueueControl, not_full) == 576,
              "one line per role, spacer lines between the producers' and the consumers' lines");
static_assert(sizeof(QueueControl) % 64 == 0);

/// A process-local handle on a queue in shared memory. Cheap to copy; thread-safe like the queue.
class Queue {
 public:
  static constexpr std::size_t kRecordHeader = 16;
  /// Records start on cache-line boundaries so that the producer writing the next record never
  /// shares a line with the consumer reading the previous one (packed records cost about twice as
  /// much per message between two cores).
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

  /// Maximum spin iterations (each one CPU pause plus a load) before sleeping; the
  /// budget adapts below it (channel_spin.hpp). 0 = sleep at once. Local to this handle.
  void set_spin(std::uint32_t iterations) noexcept {
    push_spin_.set_max(iterations);
    pop_spin_.set_max(iterations);
  }

 private:
  enum class Side { producer, consumer };
  QueueStatus lock_side(Side side, bool try_only, sys::Deadline deadline) noexcept;
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
  AdaptiveSpin push_spin_;
  AdaptiveSpin pop_spin_;
  std::uint64_t wake_threshold_ = 0;  // free bytes at which a consumer wakes sleeping producers
  /// A lower bound of head seen by this handle, read and written only under the producer lock
  /// (atomic only so that copying a handle is not a data race).
  std::atomic<std::uint64_t> cached_head_{0};
};

}  // namespace shmkit
