#include "report.hpp"

#include <fmt/format.h>

#include "shmkit/sys/process.hpp"

namespace shmkit::tool {
namespace {

const char* liveness_name(sys::Liveness l) {
  switch (l) {
    case sys::Liveness::alive: return "alive";
    case sys::Liveness::dead: return "dead";
    case sys::Liveness::unknown: return "unknown";
  }
  return "unknown";
}

const char* state_name(std::uint32_t st) {
  switch (static_cast<SegmentState>(st)) {
    case SegmentState::empty: return "empty";
    case SegmentState::initialising: return "initialising";
    case SegmentState::ready: return "ready";
  }
  return "invalid";
}

std::string summary_json(const SegmentSummary& s) {
  std::string attached;
  for (auto& a : s.attached) {
    if (!attached.empty()) attached += ",";
    attached += fmt::format(R"({{"pid":{},"start_time":{},"state":"{}"}})", a.id.pid, a.id.start_time,
                            liveness_name(a.liveness));
  }
  return fmt::format(
      R"("name":{},"base":"{:#x}","size":{},"capacity":{},"file_size":{},"at_home":{},"version":{},)"
      R"("state":"{}","creator":{{"pid":{},"start_time":{},"state":"{}"}},"attached":[{}],"in_use":{},"stale":{})",
      json_string(s.name), s.base, s.size, s.capacity, s.file_size, s.at_home ? "true" : "false", s.version,
      state_name(s.state), s.creator.pid, s.creator.start_time, liveness_name(sys::liveness(s.creator)), attached,
      s.in_use ? "true" : "false", s.stale ? "true" : "false");
}

std::string human(std::uint64_t n) {
  const char* units[] = {"B", "K", "M", "G", "T"};
  int u = 0;
  while (u < 4 && n >= 1024 && n % 1024 == 0) {
    n /= 1024;
    ++u;
  }
  return fmt::format("{}{}", n, units[u]);
}

}  // namespace

std::string json_string(const std::string& s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    if (c == '"' || c == '\\') out += fmt::format("\\{}", static_cast<char>(c));
    else if (c < 0x20) out += fmt::format("\\u{:04x}", c);
    else out += static_cast<char>(c);
  }
  return out + "\"";
}

std::string list_json(const std::vector<Listed>& list) {
  std::string out = "[";
  for (auto& l : list) {
    if (out.size() > 1) out += ",";
    if (l.summary) out += fmt::format("{{{}}}", summary_json(*l.summary));
    else out += fmt::format(R"({{"name":{},"error":{},"stale":{}}})", json_string(l.name), json_string(l.error),
                            l.stale ? "true" : "false");
  }
  return out + "]";
}

std::string list_table(const std::vector<Listed>& list) {
  std::string out = fmt::format("{:<32} {:>8} {:>8} {:>16} {:>12}  {:<6} {}\n", "NAME", "SIZE", "CAPACITY",
                                "BASE", "ATTACHED", "IN USE", "STALE");
  for (auto& l : list) {
    if (!l.summary) {
      out += fmt::format("{:<32} error: {}{}\n", l.name, l.error, l.stale ? " (stale)" : "");
      continue;
    }
    auto& s = *l.summary;
    int alive = 0, dead = 0;
    for (auto& a : s.attached) (a.liveness == sys::Liveness::dead ? dead : alive)++;
    out += fmt::format("{:<32} {:>8} {:>8} {:>#16x} {:>5} alive/{:<2}dead  {:<6} {}\n", s.name, human(s.size),
                       human(s.capacity), s.base, alive, dead, s.in_use ? "yes" : "no", s.stale ? "yes" : "no");
  }
  return out;
}

std::string info_json(const SegmentSummary& s, const HeapReport& heap) {
  std::string h = "null";
  if (heap.present) {
    h = "{";
    for (auto& [k, v] : heap.fields) h += fmt::format("{}{}:{}", h.size() > 1 ? "," : "", json_string(k), v);
    h += ",\"named_objects\":[";
    for (std::size_t i = 0; i < heap.named_objects.size(); ++i)
      h += fmt::format("{}{}", i ? "," : "", json_string(heap.named_objects[i]));
    h += "]}";
  }
  return fmt::format("{{{},\"heap\":{}}}", summary_json(s), h);
}

std::string info_text(const SegmentSummary& s, const HeapReport& heap) {
  std::string out = fmt::format(
      "name:      {}\nbase:      {:#x} ({})\nsize:      {} ({} bytes)\ncapacity:  {}\nversion:   {}\n"
      "state:     {}\ncreator:   pid {} ({})\nin use:    {}\nstale:     {}\n",
      s.name, s.base, s.at_home ? "at home" : "relocated in this process", human(s.size), s.size,
      human(s.capacity), s.version, state_name(s.state), s.creator.pid, liveness_name(sys::liveness(s.creator)),
      s.in_use ? "yes (a live process maps it)" : "no", s.stale ? "yes" : "no");
  out += fmt::format("attached:  {} process(es)\n", s.attached.size());
  for (auto& a : s.attached) out += fmt::format("  pid {:>7}  {}\n", a.id.pid, liveness_name(a.liveness));
  if (heap.present) {
    out += "heap:\n";
    for (auto& [k, v] : heap.fields) out += fmt::format("  {:<22} {}\n", k, v);
    out += fmt::format("  named objects:         {}\n", heap.named_objects.size());
    for (auto& n : heap.named_objects) out += fmt::format("    {}\n", n);
  } else {
    out += "heap:      none\n";
  }
  return out;
}

}  // namespace shmkit::tool
