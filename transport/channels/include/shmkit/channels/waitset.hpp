/// WaitSet: one thread waits for samples on several topics at once (subscribers of one segment).
///
///   shmkit::WaitSet ws(heap);
///   ws.attach(camera);                       // a Subscriber<Frame>
///   ws.attach(imu);                          // a Subscriber<Imu>
///   for (std::size_t i : ws.wait(shmkit::Clock::now() + 100ms)) ...   // indices that have data
///
/// It waits through shmkit::EventCount (locks/event_count.hpp): the WaitSet owns an entry of the
/// segment's WaitSet table (waitset_layout.hpp) and every attached subscriber's slot names it, so a
/// publish that queues a sample for one of them notifies the entry after it released the topic's
/// lock. No polling: wait() sleeps until such a notify (or the EventCount's re-check slice).
/// A WaitSet is used by one thread; its liveness is the creating thread's (as for the handles).
/// Attached subscribers must outlive the WaitSet or be detached first.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "shmkit/channels/pubsub.hpp"
#include "shmkit/channels/waitset_layout.hpp"

namespace shmkit {

class WaitSet {
 public:
  /// Claims an entry of the segment's WaitSet table. Throws shmkit::Error(out_of_memory) when all
  /// 64 are in use by live WaitSets.
  explicit WaitSet(Heap& heap);
  ~WaitSet();
  WaitSet(const WaitSet&) = delete;
  WaitSet& operator=(const WaitSet&) = delete;

  /// Adds a subscriber of the same heap (Error(invalid_argument) otherwise); returns its index.
  std::size_t attach(BytesSubscriber& sub);
  template <class T>
  std::size_t attach(Subscriber<T>& sub) {
    return attach(sub.bytes());
  }
  /// Stops notifying this WaitSet for the subscriber at `index` (it stays in the numbering).
  void detach(std::size_t index) noexcept;

  /// Indices of the attached subscribers that have a sample queued now, waiting until there is at
  /// least one or `deadline` passes (then empty).
  std::vector<std::size_t> wait(Deadline deadline = kNoDeadline);
  /// Without waiting.
  std::vector<std::size_t> ready() const;

 private:
  Heap* heap_;
  pubsub_detail::WaitSetTable* table_;
  std::uint32_t index_ = 0;
  std::vector<BytesSubscriber*> subs_;  // nullptr once detached
};

}  // namespace shmkit
