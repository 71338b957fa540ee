/// The shared-memory layout of a publish/subscribe topic (see pubsub.hpp for the API). A topic is
/// one named object of the segment's heap ("shmkit.topic:NAME", a TopicControl); its samples are
/// heap blocks that start with a SampleHeader. Everything links by segment offsets.
///
/// Who writes what. Every word of a TopicControl and every SampleHeader word but `token` changes
/// only under TopicControl::lock, inside a transaction that first records the word's old value in
/// TopicControl::log (INVARIANT6), with one exception: a publisher records a fresh loan in its own
/// slot (loans[k], from 0 to the offset) without the lock, as the only writer of that word while it
/// is alive.
///
/// Notation: for a sample s (the segment offset of its header),
///   H(s) = |{i : history[i] names s, i among the history's count slots}|
///   Q(s) = |{(sub, j) : sub is in use, j in [head, tail), q[j % depth] names s}|
///   D(s) = |{(sub, k) : sub is in use, held[k] names s}|     (taken by the subscriber, not released)
///   L(s) = |{(pub, k) : pub is in use, loans[k] names s}|
///
/// INVARIANT1 (refcount)  for every published sample s: refcount(s) == H(s) + Q(s) + D(s) >= 1,
///                        and L(s) == 0; for every loaned sample: L(s) == 1 and refcount(s) == 0
///                        and H(s) == Q(s) == D(s) == 0.
/// INVARIANT2 (live)      live_samples == |{s : H(s) + Q(s) + D(s) > 0}| (the published samples
///                        still referenced); loans are counted by their slots. Every heap block the
///                        topic holds is reachable from it, so live_samples == 0 with no loan
///                        recorded means no sample leaked.
/// INVARIANT3 (queues)    for a subscriber in use: head <= tail <= head + depth, 1 <= depth <=
///                        kQueueSlots; the samples at q[head % depth .. tail % depth) have strictly
///                        increasing seq (every subscriber receives in publish order).
/// INVARIANT4 (history)   hist_count <= history <= kMaxHistory; the history's samples, oldest
///                        first from hist_head, have strictly increasing seq.
/// INVARIANT5 (identity)  a slot is in use iff its `state` is 1; its liveness lock is then held by
///                        the slot's owner thread (or owner-died: the owner is gone and the slot
///                        waits for reclaim).
/// INVARIANT6 (log)       log.count == 0 outside a transaction; inside one, entries [0, count) hold
///                        the old values of the words written so far. frees_count > 0 only between
///                        a transaction's commit and the end of its heap frees: frees[0, count)
///                        are samples whose last reference the committed transaction dropped.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "shmkit/locks/event_count.hpp"
#include "shmkit/locks/lock.hpp"

namespace shmkit::pubsub_detail {

using u64 = std::uint64_t;
using u32 = std::uint32_t;

inline constexpr u32 kMaxSubscribers = 16;
inline constexpr u32 kMaxPublishers = 8;
inline constexpr u32 kMaxHistory = 64;
inline constexpr u32 kQueueSlots = 64;
inline constexpr u32 kMaxHeld = 32;
inline constexpr u32 kMaxLoans = 8;
// The largest transaction: a publish writes per subscriber a queue slot, tail and, when it drops
// the oldest, head, the dropped sample's refcount, dropped and live_samples; plus the history
// (slot, head, count, the evicted sample's refcount), the sample header, the loan slot and the
// counters. A reclaim of a dead subscriber writes at most its kQueueSlots + kMaxHeld references'
// refcounts, the slots and the counters.
inline constexpr u32 kLogEntries = 8 * kMaxSubscribers + 2 * (kQueueSlots + kMaxHeld) + 64;
inline constexpr u32 kMaxFrees = kMaxSubscribers + kQueueSlots + kMaxHeld + 2;

inline constexpr u64 kTopicMagic = 0x31636970546b4d53ULL;  // "SMkTpic1"
inline constexpr u32 kTopicVersion = 1;
inline constexpr u64 kTokenTag = 0xB5ULL << 56;  // never a heap link (offsets < 2^44) and never 0

/// At user offset 0 of every sample's heap block (the payload follows at kSampleHeader). `token`
/// names the sample while the block is alive: kTokenTag | (serial & 2^48-1) ^ topic tag. It sits
/// where the heap writes its free-list link when the block is freed, so a freed (and possibly
/// re-allocated) block no longer carries it: a dead process's loan record is followed only while
/// the block still carries its token (see the reclaim in src/topic_engine.hpp).
struct alignas(64) SampleHeader {
  std::atomic<u64> token;
  std::atomic<u64> refcount;  // INVARIANT1
  std::atomic<u64> size;      // payload bytes
  std::atomic<u64> seq;       // publish order within the topic (0 while loaned)
  std::atomic<u64> topic;     // segment offset of the TopicControl
  std::atomic<u64> publisher; // slot index + 1 of the publisher that loaned it
  u64 reserved[2];
};
static_assert(sizeof(SampleHeader) == 64 && std::is_standard_layout_v<SampleHeader>);

struct UndoEntry {
  u64 off;  // segment offset of the word
  u64 old;  // its value before the transaction wrote it
};

struct alignas(64) SubscriberSlot {
  Lock alive;                   // INVARIANT5: held by the owner thread while the slot is in use
  std::atomic<u64> state;       // 0 free, 1 in use
  std::atomic<u64> pid;         // owner's ProcessIdentity (for `shmkit info` and diagnostics)
  std::atomic<u64> start_time;
  std::atomic<u64> policy;      // BackPressure
  std::atomic<u64> depth;       // queue capacity, INVARIANT3
  std::atomic<u64> head, tail;  // monotonic queue positions, INVARIANT3
  std::atomic<u64> received;    // samples taken
  std::atomic<u64> dropped;     // samples dropped from this queue (drop_oldest)
  std::atomic<u64> waitset;     // 1 + index of the WaitSet entry (waitset_layout.hpp) to notify too, 0 none
  EventCount data_ready;        // notified after every publish that queued for this subscriber
  Presence presence;            // the owner's running/sleeping hint (spin_policy.hpp)
  std::atomic<u64> q[kQueueSlots];
  std::atomic<u64> held[kMaxHeld];  // 0 = empty
};

struct alignas(64) PublisherSlot {
  Lock alive;                   // INVARIANT5
  std::atomic<u64> state;
  std::atomic<u64> pid;
  std::atomic<u64> start_time;
  std::atomic<u64> published;
  std::atomic<u64> loans[kMaxLoans];        // 0 = empty; recorded without the lock by the owner
  std::atomic<u64> loan_tokens[kMaxLoans];  // the loaned sample's token, stored before loans[k]
};

/// The configuration a topic is created with (the first opener's TopicOptions, checked).
struct TopicInit {
  u64 type_hash, type_size;
  u32 max_subscribers, max_publishers, history, queue_depth, max_held, max_loans;
};

struct TopicControl {
  explicit TopicControl(const TopicInit& init) noexcept;  // topic.cpp

  u64 magic;
  u32 version;
  u32 reserved0;
  u64 type_hash;         // 0 = untyped bytes; else the sample type's Heap::type_hash
  u64 type_size;         // sizeof the sample type (0 untyped)
  u32 max_subscribers;   // <= kMaxSubscribers
  u32 max_publishers;    // <= kMaxPublishers
  u32 history;           // K, <= kMaxHistory
  u32 queue_depth;       // default per-subscriber depth, <= kQueueSlots
  u32 max_held;          // per subscriber, <= kMaxHeld
  u32 max_loans;         // per publisher, <= kMaxLoans

  alignas(64) Lock lock;
  EventCount space;      // publishers wait here (lock released) for room in a block_publisher queue
  Presence publisher_presence;  // the last publisher's running/sleeping hint (subscribers spin on it)
  std::atomic<u64> next_serial;         // token serials (fetch_add, no lock; gaps allowed)
  std::atomic<u64> seq;                 // last publish seq
  std::atomic<u64> published;           // samples published
  std::atomic<u64> live_samples;        // INVARIANT2
  std::atomic<u64> freed;               // samples given back to the heap
  std::atomic<u64> reclaimed_subscribers, reclaimed_publishers, reclaimed_loans;
  std::atomic<u64> hist_head, hist_count;  // INVARIANT4
  std::atomic<u64> hist[kMaxHistory];

  alignas(64) std::atomic<u64> log_count;  // INVARIANT6
  UndoEntry log[kLogEntries];
  std::atomic<u64> frees_count;            // INVARIANT6
  std::atomic<u64> frees[kMaxFrees];
  std::atomic<u64> free_tokens[kMaxFrees];  // the token each of frees[] carried when it was dropped

  PublisherSlot pubs[kMaxPublishers];
  SubscriberSlot subs[kMaxSubscribers];
};
static_assert(std::is_standard_layout_v<TopicControl>, "TopicControl lives in shared memory");
static_assert(std::atomic<u64>::is_always_lock_free && sizeof(std::atomic<u64>) == 8);

}  // namespace shmkit::pubsub_detail
