// The publish/subscribe engine over a TopicControl (topic_layout.hpp): this file opens, finds and
// lists topics and looks up samples; the rest of the engine is in topic_txn.cpp, topic_slots.cpp,
// topic_fanout.cpp and topic_verify.cpp, around the internal header topic_engine.hpp.
#include <string>

#include "shmkit/channels/waitset_layout.hpp"
#include "topic_engine.hpp"

namespace shmkit {

const char* to_string(BackPressure p) noexcept {
  switch (p) {
    case BackPressure::drop_oldest: return "drop_oldest";
    case BackPressure::block_publisher: return "block_publisher";
  }
  return "?";
}

const char* to_string(PubSubStatus s) noexcept {
  switch (s) {
    case PubSubStatus::ok: return "ok";
    case PubSubStatus::would_block: return "would_block";
    case PubSubStatus::timed_out: return "timed_out";
    case PubSubStatus::out_of_memory: return "out_of_memory";
    case PubSubStatus::too_many_loans: return "too_many_loans";
    case PubSubStatus::too_many_held: return "too_many_held";
    case PubSubStatus::invalid_argument: return "invalid_argument";
    case PubSubStatus::not_recoverable: return "not_recoverable";
    case PubSubStatus::corrupt: return "corrupt";
  }
  return "?";
}

namespace pubsub_detail {
std::atomic<int> test_kill_point{0};
TopicControl::TopicControl(const TopicInit& in) noexcept
    : magic(kTopicMagic),
      version(kTopicVersion),
      reserved0(0),
      type_hash(in.type_hash),
      type_size(in.type_size),
      max_subscribers(in.max_subscribers),
      max_publishers(in.max_publishers),
      history(in.history),
      queue_depth(in.queue_depth),
      max_held(in.max_held),
      max_loans(in.max_loans) {}
}  // namespace pubsub_detail

// ---- open / find / list ----

Topic::Topic(Heap& heap, TopicControl* ctl, std::string name)
    : heap_(&heap), ctl_(ctl), name_(std::move(name)) {
  ctl_off_ = static_cast<u64>(reinterpret_cast<std::byte*>(ctl) - heap.base());
  auto bad = [&](const std::string& what) {
    throw Error(Errc::corrupt, "pubsub topic '" + name_ + "': " + what);
  };
  if (ctl->magic != kTopicMagic) bad("the named object is not a topic (bad magic)");
  if (ctl->version != kTopicVersion)
    throw Error(Errc::version_mismatch, "pubsub topic '" + name_ + "': layout version " +
                                            std::to_string(ctl->version) + ", this build reads " +
                                            std::to_string(kTopicVersion));
  // Local copies, checked once: later uses never re-read the configuration from shared memory.
  max_subs_ = ctl->max_subscribers;
  max_pubs_ = ctl->max_publishers;
  history_ = ctl->history;
  depth_ = ctl->queue_depth;
  max_held_ = ctl->max_held;
  max_loans_ = ctl->max_loans;
  type_hash_ = ctl->type_hash;
  if (max_subs_ < 1 || max_subs_ > kMaxSubscribers || max_pubs_ < 1 || max_pubs_ > kMaxPublishers ||
      history_ > kMaxHistory || depth_ < 1 || depth_ > kQueueSlots || max_held_ < 1 || max_held_ > kMaxHeld ||
      max_loans_ < 1 || max_loans_ > kMaxLoans)
    bad("its configuration is out of range");
}

namespace {
std::string full_name(std::string_view name) {
  if (name.empty()) throw Error(Errc::invalid_argument, "pubsub: a topic name must not be empty");
  constexpr std::size_t kMaxName = 83;  // the heap's named-object limit
  if (Topic::kPrefix.size() + name.size() > kMaxName)
    throw Error(Errc::invalid_argument, "pubsub topic '" + std::string(name) + "': the name is longer than " +
                                            std::to_string(kMaxName - Topic::kPrefix.size()) + " bytes");
  return std::string(Topic::kPrefix) + std::string(name);
}
}  // namespace

namespace pubsub_detail {
void check_range(const char* what, std::uint32_t v, std::uint32_t lo, std::uint32_t hi) {
  if (v < lo || v > hi)
    throw Error(Errc::invalid_argument, std::string("pubsub TopicOptions::") + what + " = " + std::to_string(v) +
                                            " is outside [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
}
}  // namespace pubsub_detail

Topic Topic::open(Heap& heap, std::string_view name, const TopicOptions& o, std::uint64_t type_hash,
                  std::uint64_t type_size) {
  const std::string full = full_name(name);
  check_range("max_subscribers", o.max_subscribers, 1, kMaxSubscribers);
  check_range("max_publishers", o.max_publishers, 1, kMaxPublishers);
  check_range("history", o.history, 0, kMaxHistory);
  check_range("queue_depth", o.queue_depth, 1, kQueueSlots);
  check_range("max_held", o.max_held, 1, kMaxHeld);
  check_range("max_loans", o.max_loans, 1, kMaxLoans);
  TopicInit init{type_hash, type_size, o.max_subscribers, o.max_publishers, o.history, o.queue_depth,
                 o.max_held, o.max_loans};
  auto* ctl = heap.find_or_construct<TopicControl>(full, init);
  Topic t(heap, ctl, std::string(name));
  if (type_hash != 0) t.type_hash_ = type_hash;  // this handle's type runs the destructor
  t.waitsets_ = heap.find_or_construct<WaitSetTable>(kWaitSetTableName);
  if (t.waitsets_->magic != kWaitSetMagic)
    throw Error(Errc::corrupt, "pubsub: the named object " + std::string(kWaitSetTableName) + " is not a WaitSet table");
  if (type_hash != 0 && ctl->type_hash != 0 && (ctl->type_hash != type_hash || ctl->type_size != type_size))
    throw Error(Errc::invalid_argument, "pubsub topic '" + std::string(name) +
                                            "': it carries samples of another type (" +
                                            std::to_string(ctl->type_size) + " bytes) than this handle's (" +
                                            std::to_string(type_size) + " bytes)");
  return t;
}

Topic Topic::find(Heap& heap, std::string_view name) {
  auto* ctl = heap.find<TopicControl>(full_name(name));
  if (ctl == nullptr) return Topic();
  return Topic(heap, ctl, std::string(name));
}

std::vector<std::string> Topic::list(Heap& heap) {
  std::vector<std::string> out;
  for (auto& n : heap.names())
    if (n.rfind(kPrefix, 0) == 0) out.push_back(n.substr(kPrefix.size()));
  return out;
}

// ---- samples ----

SampleHeader* Topic::header(std::uint64_t s) const noexcept {
  if (s == 0 || s % 64 != 0) return nullptr;
  std::byte* p = heap_->base() + s;
  if (heap_->usable_size(p) < sizeof(SampleHeader)) return nullptr;  // not a live heap block
  auto* h = reinterpret_cast<SampleHeader*>(p);
  if ((h->token.load(std::memory_order_relaxed) & (u64{0xFF} << 56)) != kTokenTag ||
      h->topic.load(std::memory_order_relaxed) != ctl_off_)
    return nullptr;
  return h;
}
std::byte* Topic::payload(std::uint64_t s) const noexcept { return heap_->base() + s + sizeof(SampleHeader); }

bool Topic::has_data(int sub) const noexcept {
  const SubscriberSlot& s = ctl_->subs[sub];
  return s.head.load(std::memory_order_acquire) != s.tail.load(std::memory_order_acquire);
}

}  // namespace shmkit
