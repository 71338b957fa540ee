/// The shared part of shmkit::WaitSet (waitset.hpp): one table per segment, the named object
/// "shmkit.pubsub.waitsets". A WaitSet claims an entry; each subscriber attached to it records
/// 1 + the entry's index in its slot (SubscriberSlot::waitset), and every publish that queues a
/// sample for that subscriber also notifies the entry's EventCount.
///
/// INVARIANT1  an entry is in use iff state == 1, and then its liveness lock is held by the
///             WaitSet's owner thread (or owner-died: the owner is gone; the next claimant takes
///             the entry over). A subscriber slot naming an entry that is not in use, or that
///             another WaitSet now holds, costs a spurious wake-up there, never a missed one for
///             the entry's real owner (its own subscribers name it too).
#pragma once

#include <atomic>
#include <cstdint>
#include <type_traits>

#include "shmkit/locks/event_count.hpp"
#include "shmkit/locks/lock.hpp"

namespace shmkit::pubsub_detail {

inline constexpr std::uint32_t kWaitSets = 64;
inline constexpr std::uint64_t kWaitSetMagic = 0x31746553746957ULL;  // "WitSet1"

struct alignas(64) WaitSetEntry {
  Lock alive;                       // INVARIANT1
  std::atomic<std::uint64_t> state; // 0 free, 1 in use
  EventCount ready;                 // notified by publishes to the attached subscribers
};

struct WaitSetTable {
  WaitSetTable() noexcept : magic(kWaitSetMagic) {}
  std::uint64_t magic;
  Lock lock;  // claims of entries
  WaitSetEntry entries[kWaitSets];
};
static_assert(std::is_standard_layout_v<WaitSetTable>, "WaitSetTable lives in shared memory");

}  // namespace shmkit::pubsub_detail
