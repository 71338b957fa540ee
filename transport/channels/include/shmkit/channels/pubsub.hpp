/// Zero-copy publish/subscribe on a named topic in a segment (no daemon).
///
/// A publisher loans a sample from the segment's heap, writes it in place and publishes it; every
/// subscriber (up to TopicOptions::max_subscribers) receives a read-only reference to the same
/// block, and the block goes back to the heap when the last reference is released. A late
/// subscriber first receives the topic's last K samples (TopicOptions::history). Each subscriber
/// chooses what its full queue does to a publisher: drop its oldest sample, or block the publisher
/// (up to the publisher's deadline). Crash safety and discovery: topic.hpp; the shared layout and
/// its invariants: topic_layout.hpp.
///
///   shmkit::Heap& heap = shmkit::Heap::attach(seg);
///   shmkit::Publisher<Frame> pub(heap, "camera");
///   auto frame = pub.loan();               // constructs a Frame in the heap
///   frame->width = 640; ...
///   pub.publish(std::move(frame));
///
///   shmkit::Subscriber<Frame> sub(heap, "camera");   // in another process
///   shmkit::Sample<Frame> f = sub.take(shmkit::Clock::now() + 1s);
///   if (f) use(f->width);                  // released when f goes out of scope
///
/// Samples of any size: BytesPublisher::loan(n) takes the size per sample; a T may hold dynamically
/// sized data allocated from the same heap (std::vector<int, shmkit::Allocator<int>>): the process
/// that drops a published sample's last reference runs ~T there, if it has a Publisher<T> or
/// Subscriber<T> of that type (a process with neither, such as the shmkit tool reclaiming a dead
/// subscriber's samples, frees the block only: what ~T would have freed stays allocated).
///
/// Threads: a handle is used by one thread at a time, and its liveness is that of the thread that
/// created it (its slot's robust lock): when that thread exits, the slot counts as dead. Loans and
/// samples must not outlive their handle.
///
/// Releases are batched: a Sample's destructor hands its reference back to the subscriber handle,
/// which returns it to the topic at its next take()/try_take() (in the same critical section), at
/// flush(), before it sleeps, and when it is destroyed.
#pragma once

#include <cstddef>
#include <cstdint>
#include <new>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "shmkit/channels/topic.hpp"
#include "shmkit/heap/heap.hpp"

namespace shmkit {

struct SubscriberOptions {
  BackPressure policy = BackPressure::drop_oldest;
  std::uint32_t queue_depth = 0;  // 0: the topic's queue_depth; <= 64
  bool history = true;            // start with the topic's last K samples
  /// Samples one take() moves from the queue into this handle at once (handed out by the next
  /// takes without the lock): fewer lock round trips, but the prefetched ones count as held (and
  /// are no longer dropped by drop_oldest). 1..32.
  std::uint32_t prefetch = 1;
};

namespace pubsub_detail {
using DestroyFn = void (*)(void* payload);
/// Process-local: the destructor to run on a published sample's payload of this type when this
/// process frees it (see the file comment).
void register_destroy(std::uint64_t type_hash, DestroyFn fn);
}  // namespace pubsub_detail

class BytesPublisher;
class BytesSubscriber;

/// A sample loaned to a publisher: the payload is writable until publish. Destroying an unpublished
/// loan gives the block back.
class LoanedBytes {
 public:
  LoanedBytes() = default;
  LoanedBytes(LoanedBytes&& o) noexcept { *this = std::move(o); }
  LoanedBytes& operator=(LoanedBytes&& o) noexcept;
  ~LoanedBytes() { reset(); }
  std::byte* data() const noexcept { return data_; }
  std::size_t size() const noexcept { return size_; }
  explicit operator bool() const noexcept { return off_ != 0; }
  void reset() noexcept;  // discards an unpublished loan

 private:
  friend class BytesPublisher;
  Topic* topic_ = nullptr;
  int pub_ = -1;
  std::uint64_t off_ = 0;
  std::byte* data_ = nullptr;
  std::size_t size_ = 0;
};

/// A read-only reference to a published sample. Releasing it (destruction, reset) hands it back to
/// its subscriber handle (see the file comment).
class SampleBytes {
 public:
  SampleBytes() = default;
  SampleBytes(SampleBytes&& o) noexcept { *this = std::move(o); }
  SampleBytes& operator=(SampleBytes&& o) noexcept;
  ~SampleBytes() { reset(); }
  const std::byte* data() const noexcept { return data_; }
  std::size_t size() const noexcept { return size_; }
  std::uint64_t seq() const noexcept { return seq_; }  // publish order within the topic (from 1)
  explicit operator bool() const noexcept { return off_ != 0; }
  void reset() noexcept;

 private:
  friend class BytesSubscriber;
  BytesSubscriber* sub_ = nullptr;
  std::uint64_t off_ = 0;
  const std::byte* data_ = nullptr;
  std::size_t size_ = 0;
  std::uint64_t seq_ = 0;
};

/// Publishes byte samples of any size on a topic.
class BytesPublisher {
 public:
  /// Opens (or creates) the topic and claims a publisher slot. Throws shmkit::Error (see Topic::open;
  /// out_of_memory when all publisher slots are taken).
  BytesPublisher(Heap& heap, std::string_view topic, const TopicOptions& opts = {})
      : BytesPublisher(heap, topic, opts, 0, 0) {}
  BytesPublisher(Heap& heap, std::string_view topic, const TopicOptions& opts, std::uint64_t type_hash,
                 std::uint64_t type_size);
  ~BytesPublisher();
  BytesPublisher(const BytesPublisher&) = delete;
  BytesPublisher& operator=(const BytesPublisher&) = delete;

  /// A sample of `bytes` payload bytes (64-aligned); empty with *status set on failure.
  [[nodiscard]] LoanedBytes loan(std::size_t bytes, PubSubStatus* status = nullptr) noexcept;
  /// Delivers the sample to every subscriber and the history. timed_out: a block_publisher
  /// subscriber stayed full until `deadline` (the loan stays valid: publish again or drop it).
  PubSubStatus publish(LoanedBytes& sample, Deadline deadline = kNoDeadline) noexcept;
  PubSubStatus publish(LoanedBytes&& sample, Deadline deadline = kNoDeadline) noexcept {
    return publish(sample, deadline);
  }
  Topic& topic() noexcept { return topic_; }
  int slot() const noexcept { return slot_; }

 private:
  Topic topic_;
  int slot_ = -1;
};

/// Receives byte samples from a topic.
class BytesSubscriber {
 public:
  BytesSubscriber(Heap& heap, std::string_view topic, const TopicOptions& topic_opts = {},
                  const SubscriberOptions& opts = {})
      : BytesSubscriber(heap, topic, topic_opts, opts, 0, 0) {}
  BytesSubscriber(Heap& heap, std::string_view topic, const TopicOptions& topic_opts,
                  const SubscriberOptions& opts, std::uint64_t type_hash, std::uint64_t type_size);
  ~BytesSubscriber();
  BytesSubscriber(const BytesSubscriber&) = delete;
  BytesSubscriber& operator=(const BytesSubscriber&) = delete;

  /// The oldest queued sample, or empty (status would_block, too_many_held, ...).
  [[nodiscard]] SampleBytes try_take(PubSubStatus* status = nullptr) noexcept;
  /// Waits until a sample is queued or `deadline` passes (empty, status timed_out).
  SampleBytes take(Deadline deadline = kNoDeadline, PubSubStatus* status = nullptr) noexcept;
  /// Racy look without the lock: something is queued.
  bool has_data() const noexcept { return topic_.has_data(slot_); }
  /// Gives the released samples back to the topic now.
  PubSubStatus flush() noexcept;
  Topic& topic() noexcept { return topic_; }
  int slot() const noexcept { return slot_; }

 private:
  friend class SampleBytes;
  SampleBytes take_impl(bool wait, Deadline deadline, PubSubStatus* status) noexcept;
  void release_later(std::uint64_t off) noexcept;
  Topic topic_;
  int slot_ = -1;
  std::vector<std::uint64_t> released_;  // capacity max_held: never grows on the hot path
  SpinPolicy spin_;                      // take()'s spin before it sleeps (spin_policy.hpp)
  std::uint32_t prefetch_ = 1;
  std::uint64_t prefetched_[pubsub_detail::kMaxHeld] = {};  // taken, not handed out: [pf_next_, pf_end_)
  std::size_t pf_next_ = 0, pf_end_ = 0;
};

/// A loaned T (constructed in place). Publishing moves it out; destroying it unpublished runs ~T
/// and gives the block back.
template <class T>
class Loan {
 public:
  Loan() = default;
  Loan(Loan&&) noexcept = default;
  Loan& operator=(Loan&& o) noexcept {
    reset();
    raw_ = std::move(o.raw_);
    return *this;
  }
  ~Loan() { reset(); }
  T* get() const noexcept { return reinterpret_cast<T*>(raw_.data()); }
  T* operator->() const noexcept { return get(); }
  T& operator*() const noexcept { return *get(); }
  explicit operator bool() const noexcept { return static_cast<bool>(raw_); }
  void reset() noexcept {
    if (raw_) {
      get()->~T();
      raw_.reset();
    }
  }

 private:
  template <class>
  friend class Publisher;
  LoanedBytes raw_;
};

/// A read-only reference to a published T.
template <class T>
class Sample {
 public:
  Sample() = default;
  const T* get() const noexcept { return reinterpret_cast<const T*>(raw_.data()); }
  const T* operator->() const noexcept { return get(); }
  const T& operator*() const noexcept { return *get(); }
  explicit operator bool() const noexcept { return static_cast<bool>(raw_); }
  std::uint64_t seq() const noexcept { return raw_.seq(); }
  void reset() noexcept { raw_.reset(); }

 private:
  template <class>
  friend class Subscriber;
  SampleBytes raw_;
};

template <class T>
class Publisher {
  static_assert(alignof(T) <= 64, "pubsub payloads are 64-byte aligned");

 public:
  Publisher(Heap& heap, std::string_view topic, const TopicOptions& opts = {})
      : raw_(heap, topic, opts, Heap::type_hash<T>(), sizeof(T)) {
    if constexpr (!std::is_trivially_destructible_v<T>)
      pubsub_detail::register_destroy(Heap::type_hash<T>(), [](void* p) { static_cast<T*>(p)->~T(); });
  }
  /// Constructs T(args...) in a loaned block; empty with *status set on failure (or when T's
  /// constructor throws: status out_of_memory for std::bad_alloc, else the exception propagates).
  template <class... Args>
  [[nodiscard]] Loan<T> loan(Args&&... args) {
    return loan_with_status(nullptr, std::forward<Args>(args)...);
  }
  template <class... Args>
  [[nodiscard]] Loan<T> loan_with_status(PubSubStatus* status, Args&&... args) {
    Loan<T> l;
    LoanedBytes b = raw_.loan(sizeof(T), status);
    if (!b) return l;
    ::new (b.data()) T(std::forward<Args>(args)...);  // on a throw, b's destructor gives the block back
    l.raw_ = std::move(b);
    return l;
  }
  PubSubStatus publish(Loan<T>&& s, Deadline deadline = kNoDeadline) noexcept {
    return raw_.publish(s.raw_, deadline);
  }
  PubSubStatus publish(Loan<T>& s, Deadline deadline = kNoDeadline) noexcept { return raw_.publish(s.raw_, deadline); }
  BytesPublisher& bytes() noexcept { return raw_; }
  Topic& topic() noexcept { return raw_.topic(); }

 private:
  BytesPublisher raw_;
};

template <class T>
class Subscriber {
 public:
  Subscriber(Heap& heap, std::string_view topic, const TopicOptions& topic_opts = {},
             const SubscriberOptions& opts = {})
      : raw_(heap, topic, topic_opts, opts, Heap::type_hash<T>(), sizeof(T)) {
    if constexpr (!std::is_trivially_destructible_v<T>)
      pubsub_detail::register_destroy(Heap::type_hash<T>(), [](void* p) { static_cast<T*>(p)->~T(); });
  }
  [[nodiscard]] Sample<T> try_take(PubSubStatus* status = nullptr) noexcept {
    Sample<T> s;
    s.raw_ = raw_.try_take(status);
    return s;
  }
  Sample<T> take(Deadline deadline = kNoDeadline, PubSubStatus* status = nullptr) noexcept {
    Sample<T> s;
    s.raw_ = raw_.take(deadline, status);
    return s;
  }
  bool has_data() const noexcept { return raw_.has_data(); }
  PubSubStatus flush() noexcept { return raw_.flush(); }
  BytesSubscriber& bytes() noexcept { return raw_; }
  Topic& topic() noexcept { return raw_.topic(); }

 private:
  BytesSubscriber raw_;
};

}  // namespace shmkit
