/// Topic: a named publish/subscribe topic in a segment's heap, the shared part of
/// shmkit::Publisher / shmkit::Subscriber (pubsub.hpp). Discovery goes through the heap's named
/// objects: the topic NAME is the named object "shmkit.topic:NAME" (a TopicControl,
/// topic_layout.hpp); Topic::list() finds them all.
///
/// Crash safety, with no daemon (details and invariants in topic_layout.hpp and src/topic_engine.hpp):
///  * All shared state changes under the topic's robust Lock, in transactions with an undo log; the
///    next process that acquires the lock after its owner died rolls the transaction back and
///    finishes the heap frees a committed one had left.
///  * Each publisher and subscriber holds a robust Lock of its own slot for its lifetime, so its
///    death is visible to everyone as the lock's owner-died state (the kernel marks it when the
///    thread dies; no pid polling, no pid-reuse confusion). A dead subscriber's references (queued
///    and held) and a dead publisher's loans are released by the next publish, by reclaim(), or by
///    `shmkit rm --stale`; a publisher blocked on a full block_publisher queue notices the death
///    within a few milliseconds and reclaims the subscriber instead of waiting on it.
///  * A loan is a heap block allocated with Heap::allocate_owned: a publisher killed before it
///    recorded the loan loses the block to Heap::reclaim_dead(); once recorded, the topic reclaims
///    it (after running reclaim_dead, so that exactly one of the two frees it, see src/topic_engine.hpp).
///    Publishing disowns the block (Heap::disown), after which only the topic frees it.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "shmkit/channels/topic_layout.hpp"
#include "shmkit/sys/error.hpp"
#include "shmkit/sys/futex_word.hpp"

namespace shmkit {

class Heap;

namespace pubsub_detail {
struct WaitSetTable;
inline constexpr const char* kWaitSetTableName = "shmkit.pubsub.waitsets";
/// Runs the destructor registered in this process for `type_hash` (pubsub.hpp) on a payload; a
/// no-op when none is registered.
void destroy_payload(std::uint64_t type_hash, void* payload) noexcept;
/// Crash tests only: a process whose test_kill_point equals a point that publish()/take() passes
/// SIGKILLs itself there (1: publish after disowning, 2: publish inside the transaction, 3: publish
/// after the commit before its heap frees, 4: take inside the transaction). 0 = never.
extern std::atomic<int> test_kill_point;
}  // namespace pubsub_detail

/// What a subscriber's full queue does to a publish.
enum class BackPressure : std::uint32_t {
  drop_oldest = 1,      // the subscriber's oldest queued sample is dropped (and counted)
  block_publisher = 2,  // the publisher waits (up to its deadline) until the subscriber takes one
};
const char* to_string(BackPressure) noexcept;

/// Status of the hot-path calls (loan, publish, take).
enum class PubSubStatus : std::uint8_t {
  ok = 0,
  would_block,      // try_take: nothing queued
  timed_out,        // the deadline passed (publish: a block_publisher subscriber stayed full)
  out_of_memory,    // loan: the heap cannot give the block
  too_many_loans,   // loan: this publisher already holds max_loans unpublished samples
  too_many_held,    // take: this subscriber already holds max_held samples
  invalid_argument, // a sample that is not this handle's, or an empty handle
  not_recoverable,  // the topic's lock was left unrepaired; the topic is unusable
  corrupt,          // the shared state failed validation (a bug or foreign writes)
};
const char* to_string(PubSubStatus) noexcept;

/// Per-topic configuration, fixed by whoever creates the topic (later openers' options are ignored,
/// except that a typed opener must agree on the sample type).
struct TopicOptions {
  std::uint32_t max_subscribers = 8;  // <= 16
  std::uint32_t max_publishers = 4;   // <= 8
  std::uint32_t history = 0;          // K: samples a late subscriber receives first, <= 64
  std::uint32_t queue_depth = 16;     // default per-subscriber queue, <= 64
  std::uint32_t max_held = 8;         // samples one subscriber may hold at once, <= 32
  std::uint32_t max_loans = 4;        // unpublished samples one publisher may hold, <= 8
};

struct PublisherInfo {
  std::uint32_t slot = 0;
  std::int32_t pid = 0;
  bool alive = false;
  std::uint64_t loans = 0, published = 0;
};
struct SubscriberInfo {
  std::uint32_t slot = 0;
  std::int32_t pid = 0;
  bool alive = false;
  BackPressure policy = BackPressure::drop_oldest;
  std::uint64_t depth = 0, queued = 0, held = 0, received = 0, dropped = 0;
};
struct TopicStats {
  std::string name;
  std::uint32_t history = 0, max_subscribers = 0, max_publishers = 0;
  std::uint64_t published = 0, live_samples = 0, freed = 0, history_count = 0;
  std::uint64_t reclaimed_subscribers = 0, reclaimed_publishers = 0, reclaimed_loans = 0;
  std::vector<PublisherInfo> publishers;
  std::vector<SubscriberInfo> subscribers;
};

/// A process-local handle on a topic. Copyable; the topic lives as long as the segment (or until
/// remove()).
class Topic {
 public:
  static constexpr std::string_view kPrefix = "shmkit.topic:";

  /// Finds or creates the topic NAME in `heap`. Throws shmkit::Error: invalid_argument for a bad
  /// name or options, or a sample type that differs from the topic's (type_hash 0 = bytes, which
  /// accepts any); corrupt when the named object is not a valid topic.
  static Topic open(Heap& heap, std::string_view name, const TopicOptions& opts = {},
                    std::uint64_t type_hash = 0, std::uint64_t type_size = 0);
  /// The topic NAME if it exists (nullptr ctl otherwise: check valid()).
  static Topic find(Heap& heap, std::string_view name);
  /// Names of every topic in the heap (without the prefix).
  static std::vector<std::string> list(Heap& heap);

  Topic() = default;
  bool valid() const noexcept { return ctl_ != nullptr; }
  const std::string& name() const noexcept { return name_; }
  Heap& heap() const noexcept { return *heap_; }
  pubsub_detail::TopicControl* control() const noexcept { return ctl_; }

  /// Publishers, subscribers, queue depths and counters (under the lock). Throws Error when the
  /// topic's lock is not recoverable.
  TopicStats stats();
  /// Checks INVARIANT1-6 of topic_layout.hpp under the lock; one message per violation. Quiescent
  /// or not: every checked word changes only under the lock (loans being recorded aside, which are
  /// checked only for being valid samples).
  std::vector<std::string> verify();
  /// Releases every reference held by dead subscribers and every loan of dead publishers, and frees
  /// their slots. Returns how many slots it reclaimed.
  std::size_t reclaim() noexcept;

  // -- the engine, used by the publisher and subscriber handles (pubsub.cpp) --
  struct Guard;  // holds the topic lock (repaired) for one critical section (src/topic_engine.hpp)
  PubSubStatus lock(sys::Deadline deadline = sys::kNoDeadline) noexcept;
  void unlock() noexcept;
  int claim_publisher();                                // throws Error when all slots are taken
  int claim_subscriber(BackPressure policy, std::uint32_t depth, bool want_history);
  void release_publisher(int slot) noexcept;
  void release_subscriber(int slot) noexcept;
  /// Loan: allocate_owned + header + record in the publisher's slot. Returns the sample offset (0
  /// on failure, with *st set).
  std::uint64_t loan(int pub, std::size_t bytes, PubSubStatus* st) noexcept;
  void discard(int pub, std::uint64_t sample) noexcept;
  PubSubStatus publish(int pub, std::uint64_t sample, sys::Deadline deadline) noexcept;
  /// Moves the oldest queued samples (up to max_samples, and free held slots) to the held list,
  /// releasing `releases` first, in the same critical section. wait: sleeps until a sample arrives
  /// or the deadline passes.
  PubSubStatus take(int sub, std::uint64_t* samples, std::size_t max_samples, std::size_t* n_samples,
                    const std::uint64_t* releases, std::size_t n_releases, bool wait, sys::Deadline deadline,
                    SpinPolicy* spin = nullptr) noexcept;
  PubSubStatus release(int sub, const std::uint64_t* samples, std::size_t n) noexcept;
  /// Names the WaitSet entry (1 + index, 0 = none) a publish to this subscriber also notifies.
  PubSubStatus set_waitset(int sub, std::uint64_t entry_plus_one) noexcept;
  /// Racy (lock-free) look: a sample is queued for this subscriber.
  bool has_data(int sub) const noexcept;
  /// Lock-free look: a live block_publisher subscriber's queue holds more than `limit` of its
  /// depth (full: limit = depth - 1; a waiting publisher resumes at half: depth / 2).
  bool block_queue_above(bool half) const noexcept;
  void notify_subscribers(std::uint64_t mask) noexcept;  // after a publish, without the lock
  pubsub_detail::WaitSetTable* waitsets() const noexcept { return waitsets_; }
  pubsub_detail::SampleHeader* header(std::uint64_t sample) const noexcept;
  std::byte* payload(std::uint64_t sample) const noexcept;

 private:
  Topic(Heap& heap, pubsub_detail::TopicControl* ctl, std::string name);
  Heap* heap_ = nullptr;
  pubsub_detail::TopicControl* ctl_ = nullptr;
  std::string name_;
  std::uint64_t ctl_off_ = 0;  // segment offset of ctl_ (samples record it)
  std::uint64_t seg_size_ = 0;  // for offset checks (grows: refreshed when an offset looks out of range)
  // local copies of the configuration (never re-read from shared memory after open)
  std::uint64_t type_hash_ = 0;
  pubsub_detail::WaitSetTable* waitsets_ = nullptr;  // the segment's WaitSet table (open() only)
  std::uint32_t max_subs_ = 0, max_pubs_ = 0, history_ = 0, depth_ = 0, max_held_ = 0, max_loans_ = 0;
  friend struct TopicEngine;
};

}  // namespace shmkit
