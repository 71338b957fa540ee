// The publisher and subscriber handles (pubsub.hpp) over the topic engine (topic*.cpp, topic_engine.hpp).
#include "shmkit/channels/pubsub.hpp"

#include <map>
#include <mutex>
#include <string>

namespace shmkit {

namespace pubsub_detail {
namespace {
std::mutex g_destroy_mutex;
std::map<std::uint64_t, DestroyFn>& destroy_registry() {
  static std::map<std::uint64_t, DestroyFn> m;
  return m;
}
}  // namespace

void register_destroy(std::uint64_t type_hash, DestroyFn fn) {
  std::lock_guard g(g_destroy_mutex);
  destroy_registry()[type_hash] = fn;
}

void destroy_payload(std::uint64_t type_hash, void* payload) noexcept {
  DestroyFn fn = nullptr;
  {
    std::lock_guard g(g_destroy_mutex);
    auto it = destroy_registry().find(type_hash);
    if (it != destroy_registry().end()) fn = it->second;
  }
  if (fn != nullptr) fn(payload);
}
}  // namespace pubsub_detail

// ---- LoanedBytes / SampleBytes ----

LoanedBytes& LoanedBytes::operator=(LoanedBytes&& o) noexcept {
  if (this != &o) {
    reset();
    topic_ = std::exchange(o.topic_, nullptr);
    pub_ = std::exchange(o.pub_, -1);
    off_ = std::exchange(o.off_, 0);
    data_ = std::exchange(o.data_, nullptr);
    size_ = std::exchange(o.size_, 0);
  }
  return *this;
}

void LoanedBytes::reset() noexcept {
  if (off_ != 0) topic_->discard(pub_, off_);
  off_ = 0;
  data_ = nullptr;
  size_ = 0;
}

SampleBytes& SampleBytes::operator=(SampleBytes&& o) noexcept {
  if (this != &o) {
    reset();
    sub_ = std::exchange(o.sub_, nullptr);
    off_ = std::exchange(o.off_, 0);
    data_ = std::exchange(o.data_, nullptr);
    size_ = std::exchange(o.size_, 0);
    seq_ = std::exchange(o.seq_, 0);
  }
  return *this;
}

void SampleBytes::reset() noexcept {
  if (off_ != 0) sub_->release_later(off_);
  off_ = 0;
  data_ = nullptr;
  size_ = 0;
}

// ---- BytesPublisher ----

BytesPublisher::BytesPublisher(Heap& heap, std::string_view topic, const TopicOptions& opts, std::uint64_t type_hash,
                               std::uint64_t type_size)
    : topic_(Topic::open(heap, topic, opts, type_hash, type_size)), slot_(topic_.claim_publisher()) {}

BytesPublisher::~BytesPublisher() { topic_.release_publisher(slot_); }

LoanedBytes BytesPublisher::loan(std::size_t bytes, PubSubStatus* status) noexcept {
  PubSubStatus st = PubSubStatus::ok;
  LoanedBytes l;
  const std::uint64_t off = topic_.loan(slot_, bytes, &st);
  if (status != nullptr) *status = st;
  if (off == 0) return l;
  l.topic_ = &topic_;
  l.pub_ = slot_;
  l.off_ = off;
  l.data_ = topic_.payload(off);
  l.size_ = bytes;
  return l;
}

PubSubStatus BytesPublisher::publish(LoanedBytes& sample, Deadline deadline) noexcept {
  if (!sample || sample.topic_ != &topic_) return PubSubStatus::invalid_argument;
  const PubSubStatus st = topic_.publish(slot_, sample.off_, deadline);
  if (st == PubSubStatus::ok) {  // the topic owns it now
    sample.off_ = 0;
    sample.data_ = nullptr;
    sample.size_ = 0;
  }
  return st;
}

// ---- BytesSubscriber ----

BytesSubscriber::BytesSubscriber(Heap& heap, std::string_view topic, const TopicOptions& topic_opts,
                                 const SubscriberOptions& opts, std::uint64_t type_hash, std::uint64_t type_size)
    : topic_(Topic::open(heap, topic, topic_opts, type_hash, type_size)),
      slot_(topic_.claim_subscriber(opts.policy, opts.queue_depth, opts.history)) {
  released_.reserve(pubsub_detail::kMaxHeld);
  if (opts.prefetch < 1 || opts.prefetch > pubsub_detail::kMaxHeld)
    throw Error(Errc::invalid_argument, "pubsub SubscriberOptions::prefetch = " + std::to_string(opts.prefetch) +
                                            " is outside [1, " + std::to_string(pubsub_detail::kMaxHeld) + "]");
  prefetch_ = opts.prefetch;
}

BytesSubscriber::~BytesSubscriber() {
  // Samples still alive in the caller's hands are released with the slot (must not outlive it).
  topic_.release_subscriber(slot_);
}

void BytesSubscriber::release_later(std::uint64_t off) noexcept {
  // At most max_held samples are held, each released once: never beyond the reserved capacity.
  if (released_.size() == released_.capacity()) (void)flush();
  released_.push_back(off);
}

PubSubStatus BytesSubscriber::flush() noexcept {
  const PubSubStatus st = topic_.release(slot_, released_.data(), released_.size());
  released_.clear();
  return st;
}

SampleBytes BytesSubscriber::take_impl(bool wait, Deadline deadline, PubSubStatus* status) noexcept {
  SampleBytes s;
  PubSubStatus st = PubSubStatus::ok;
  if (pf_next_ == pf_end_) {
    std::size_t n = 0;
    st = topic_.take(slot_, prefetched_, prefetch_, &n, released_.data(), released_.size(), wait, deadline, &spin_);
    // The topic applied the releases once it held its lock (every status but not_recoverable).
    if (st != PubSubStatus::not_recoverable) released_.clear();
    pf_next_ = 0;
    pf_end_ = n;
  }
  if (status != nullptr) *status = st;
  if (pf_next_ == pf_end_) return s;
  const std::uint64_t off = prefetched_[pf_next_++];
  s.sub_ = this;
  s.off_ = off;
  pubsub_detail::SampleHeader* h = topic_.header(off);
  // The size comes from shared memory: it must fit the block (else the sample is handed back).
  const std::uint64_t size = h != nullptr ? h->size.load(std::memory_order_relaxed) : ~std::uint64_t{0};
  if (h == nullptr || size > topic_.heap().usable_size(h) - sizeof(pubsub_detail::SampleHeader)) {
    if (status != nullptr) *status = PubSubStatus::corrupt;
    s.reset();
    return s;
  }
  s.data_ = topic_.payload(off);
  s.size_ = size;
  s.seq_ = h->seq.load(std::memory_order_relaxed);
  return s;
}

SampleBytes BytesSubscriber::try_take(PubSubStatus* status) noexcept { return take_impl(false, kNoDeadline, status); }
SampleBytes BytesSubscriber::take(Deadline deadline, PubSubStatus* status) noexcept {
  return take_impl(true, deadline, status);
}

}  // namespace shmkit
