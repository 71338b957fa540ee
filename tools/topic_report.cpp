// `shmkit info` and `shmkit rm --stale` for publish/subscribe topics (topic_report.hpp).
#include "topic_report.hpp"

#include <fmt/format.h>

#include <vector>

#include "report.hpp"
#include "shmkit/channels/topic.hpp"
#include "shmkit/heap/heap.hpp"
#include "shmkit/sys/error.hpp"

namespace shmkit::tool {

namespace {
// Runs fn(topic) for every topic of the segment's heap (none when it has no heap). A topic that
// cannot be read is reported through on_error and skipped.
template <class Fn, class Err>
void for_each_topic(const Segment& seg, Fn fn, Err on_error) {
  if (seg.header().root(RootSlot::heap).load(std::memory_order_acquire) == 0) return;
  auto& s = const_cast<Segment&>(seg);
  Heap& heap = Heap::attach(s);
  for (const std::string& name : Topic::list(heap)) {
    try {
      Topic t = Topic::find(heap, name);
      if (t.valid()) fn(t);
    } catch (const Error& e) {
      on_error(name, e.what());
    }
  }
  Heap::detach(s);
}
}  // namespace

std::string topics_text(const Segment& seg) {
  std::string out;
  for_each_topic(
      seg,
      [&](Topic& t) {
        TopicStats st = t.stats();
        out += fmt::format("topic {}: published {}, live samples {}, history {}/{}, reclaimed {} subscriber(s) {} publisher(s)\n",
                           st.name, st.published, st.live_samples, st.history_count, st.history,
                           st.reclaimed_subscribers, st.reclaimed_publishers);
        for (auto& p : st.publishers)
          out += fmt::format("  publisher  slot {} pid {}{}: loans {}, published {}\n", p.slot, p.pid,
                             p.alive ? "" : " (dead)", p.loans, p.published);
        for (auto& s : st.subscribers)
          out += fmt::format("  subscriber slot {} pid {}{}: {} queue {}/{}, held {}, received {}, dropped {}\n", s.slot,
                             s.pid, s.alive ? "" : " (dead)", to_string(s.policy), s.queued, s.depth, s.held,
                             s.received, s.dropped);
      },
      [&](const std::string& name, const char* what) { out += fmt::format("topic {}: error: {}\n", name, what); });
  return out;
}

std::string topics_json(const Segment& seg) {
  std::vector<std::string> items;
  for_each_topic(
      seg,
      [&](Topic& t) {
        TopicStats st = t.stats();
        std::vector<std::string> pubs, subs;
        for (auto& p : st.publishers)
          pubs.push_back(fmt::format(R"({{"slot":{},"pid":{},"alive":{},"loans":{},"published":{}}})", p.slot, p.pid,
                                     p.alive, p.loans, p.published));
        for (auto& s : st.subscribers)
          subs.push_back(fmt::format(
              R"({{"slot":{},"pid":{},"alive":{},"policy":"{}","depth":{},"queued":{},"held":{},"received":{},"dropped":{}}})",
              s.slot, s.pid, s.alive, to_string(s.policy), s.depth, s.queued, s.held, s.received, s.dropped));
        items.push_back(fmt::format(
            R"({{"name":{},"published":{},"live_samples":{},"history":{},"history_count":{},"publishers":[{}],"subscribers":[{}]}})",
            json_string(st.name), st.published, st.live_samples, st.history, st.history_count,
            fmt::join(pubs, ","), fmt::join(subs, ",")));
      },
      [&](const std::string& name, const char* what) {
        items.push_back(fmt::format(R"({{"name":{},"error":{}}})", json_string(name), json_string(what)));
      });
  return fmt::format("[{}]", fmt::join(items, ","));
}

std::size_t reclaim_topics(const Segment& seg) {
  std::size_t n = 0;
  for_each_topic(seg, [&](Topic& t) { n += t.reclaim(); }, [](const std::string&, const char*) {});
  return n;
}

}  // namespace shmkit::tool
