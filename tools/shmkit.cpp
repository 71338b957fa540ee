// The shmkit command: create, list, inspect, verify and remove shared-memory segments.
//
// Exit status: 0 success; 1 the operation failed (the one-line reason is on stderr); 2 the command
// line was wrong (usage on stderr); 3 `verify` found inconsistencies.
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "inspect.hpp"
#include "report.hpp"
#include "topic_report.hpp"
#include "shmkit/shm/segment.hpp"
#include "shmkit/sys/error.hpp"

namespace shmkit::tool {
namespace {

struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

const char* kUsage =
    "usage: shmkit <command> [options]\n"
    "commands:\n"
    "  create NAME --size S [--capacity C] [--base ADDR] [--mode OCTAL]\n"
    "                         create a segment /dev/shm/NAME (sizes take K, M, G, T suffixes)\n"
    "                         (NAME with or without its leading '/': seg and /seg are one segment)\n"
    "  ls [--json]            list shmkit segments under /dev/shm\n"
    "  info NAME [--json]     show one segment: geometry, base, attached processes, heap,\n"
    "                         pubsub topics (publishers, subscribers, queue depths)\n"
    "  verify NAME            check the segment's heap; exit 3 on any finding\n"
    "  rm NAME...             remove segments\n"
    "  rm --stale             remove every stale segment (no live process maps it, and all its\n"
    "                         processes died attached, or its creator died initialising it) and\n"
    "                         reclaim heap blocks owned by dead processes in the others\n"
    "run `shmkit <command> --help` for one command's help\n";

const std::map<std::string, std::string> kHelp = {
    {"create",
     "usage: shmkit create NAME --size S [--capacity C] [--base ADDR] [--mode OCTAL]\n"
     "Creates /dev/shm/NAME as a shmkit segment of S bytes, reserving C bytes of address space\n"
     "(default 16G) at ADDR (default: derived from NAME). Prints the base address.\n"},
    {"ls", "usage: shmkit ls [--json]\nLists the shmkit segments under /dev/shm.\n"},
    {"info", "usage: shmkit info NAME [--json]\nShows one segment. JSON fields: name, base (hex), size,\n"
             "capacity, at_home, version, state, creator, attached[], stale, heap, topics[] (pubsub:\n"
             "publishers, subscribers with policy, depth and queued/held samples).\n"},
    {"verify", "usage: shmkit verify NAME\nWalks the segment's heap; prints each finding; exit 3 if any.\n"},
    {"rm", "usage: shmkit rm NAME... | shmkit rm --stale\nRemoves segments (attached processes keep their mappings).\n"
           "--stale never removes a segment a live process maps (forked children included): see\n"
           "`shmkit ls`, columns IN USE and STALE. It also removes incomplete files (zero-filled, no\n"
           "header: a creator killed while sizing the file) that no process holds.\n"},
};

std::uint64_t parse_size(const std::string& flag, const std::string& v) {
  if (v.empty() || v[0] < '0' || v[0] > '9') throw UsageError(flag + ": '" + v + "' is not a size");
  char* end = nullptr;
  errno = 0;
  unsigned long long n = std::strtoull(v.c_str(), &end, 0);
  if (errno != 0) throw UsageError(flag + ": '" + v + "' is out of range");
  std::string suffix(end);
  unsigned shift = 0;
  if (suffix.empty() || suffix == "B") shift = 0;
  else if (suffix == "K" || suffix == "k" || suffix == "KiB") shift = 10;
  else if (suffix == "M" || suffix == "MiB") shift = 20;
  else if (suffix == "G" || suffix == "GiB") shift = 30;
  else if (suffix == "T" || suffix == "TiB") shift = 40;
  else throw UsageError(flag + ": unknown size suffix '" + suffix + "' (use K, M, G or T)");
  if (shift > 0 && n > (~0ULL >> shift)) throw UsageError(flag + ": '" + v + "' is out of range");
  return n << shift;
}

struct Args {
  std::vector<std::string> positional;
  std::map<std::string, std::string> options;  // --flag value
  std::vector<std::string> flags;              // --flag
  bool has(const std::string& f) const {
    for (auto& x : flags) if (x == f) return true;
    return false;
  }
};

Args parse(int argc, char** argv, const std::vector<std::string>& valued, const std::vector<std::string>& bare) {
  Args a;
  for (int i = 2; i < argc; ++i) {
    std::string s = argv[i];
    if (s.rfind("--", 0) == 0) {
      bool ok = false;
      for (auto& v : valued)
        if (s == v) {
          if (i + 1 >= argc) throw UsageError(s + " needs a value");
          a.options[s] = argv[++i];
          ok = true;
        }
      for (auto& b : bare)
        if (s == b) {
          a.flags.push_back(s);
          ok = true;
        }
      if (!ok) throw UsageError("unknown option " + s);
    } else {
      a.positional.push_back(s);
    }
  }
  return a;
}

SegmentOptions inspect_options() {
  SegmentOptions o;
  o.attach = false;
  o.relocate = Relocate::allowed;
  o.open_timeout = std::chrono::milliseconds(2000);
  return o;
}

int cmd_create(const Args& a) {
  if (a.positional.size() != 1) throw UsageError("create takes exactly one NAME");
  if (!a.options.count("--size")) throw UsageError("create needs --size");
  SegmentOptions o;
  o.attach = false;
  std::uint64_t size = parse_size("--size", a.options.at("--size"));
  if (a.options.count("--capacity")) o.capacity = parse_size("--capacity", a.options.at("--capacity"));
  if (a.options.count("--base")) o.base = parse_size("--base", a.options.at("--base"));
  if (a.options.count("--mode")) {
    const std::string& m = a.options.at("--mode");
    char* end = nullptr;
    unsigned long mode = std::strtoul(m.c_str(), &end, 8);
    if (m.empty() || *end != '\0' || mode > 07777) throw UsageError("--mode: '" + m + "' is not an octal mode");
    o.mode = static_cast<mode_t>(mode);
  }
  Segment seg = Segment::create(segment_name(a.positional[0]), size, o);
  std::printf("%s base 0x%" PRIxPTR " size %zu capacity %zu\n", seg.name().c_str(), seg.home(), seg.size(),
              seg.capacity());
  return 0;
}

int cmd_ls(const Args& a) {
  if (!a.positional.empty()) throw UsageError("ls takes no NAME");
  auto list = list_segments();
  if (a.has("--json")) {
    std::printf("%s\n", list_json(list).c_str());
  } else {
    std::printf("%s", list_table(list).c_str());
  }
  return 0;
}

int cmd_info(const Args& a) {
  if (a.positional.size() != 1) throw UsageError("info takes exactly one NAME");
  const std::string name = segment_name(a.positional[0]);
  bool in_use = Segment::in_use(name);  // asked before this tool maps it
  Segment seg = Segment::open(name, inspect_options());
  SegmentSummary s = summarise(seg, in_use);
  HeapReport heap = heap_report(seg);
  if (a.has("--json")) {
    std::string j = info_json(s, heap);
    j.insert(j.rfind('}'), ",\"topics\":" + topics_json(seg));  // pubsub topics (topic_report.hpp)
    std::printf("%s\n", j.c_str());
  } else {
    std::printf("%s%s", info_text(s, heap).c_str(), topics_text(seg).c_str());
  }
  return 0;
}

int cmd_verify(const Args& a) {
  if (a.positional.size() != 1) throw UsageError("verify takes exactly one NAME");
  Segment seg = Segment::open(segment_name(a.positional[0]), inspect_options());
  std::vector<std::string> findings = verify_segment(seg);
  for (auto& f : findings) std::printf("%s: %s\n", seg.name().c_str(), f.c_str());
  if (!findings.empty()) {
    std::fprintf(stderr, "shmkit: %s: %zu finding(s)\n", seg.name().c_str(), findings.size());
    return 3;
  }
  std::printf("%s: ok\n", seg.name().c_str());
  return 0;
}

int cmd_rm(const Args& a) {
  if (a.has("--stale")) {
    if (!a.positional.empty()) throw UsageError("rm --stale takes no NAME");
    for (auto& l : list_segments()) {
      if (l.stale) {
        // Decided again under the file's flock: a process may have mapped it since the listing.
        if (Segment::remove_if_unused(l.name)) std::printf("removed %s\n", l.name.c_str());
        else std::printf("kept %s: a live process maps it\n", l.name.c_str());
      } else if (l.summary) {
        // A segment still in use: give back what its dead processes owned in its heap.
        try {
          Segment seg = Segment::open(l.name, inspect_options());
          if (std::size_t n = reclaim_topics(seg))
            std::printf("reclaimed %zu pubsub publisher/subscriber slot(s) of dead processes in %s\n", n, l.name.c_str());
          if (std::size_t n = reclaim_dead(seg)) std::printf("reclaimed %zu from dead processes in %s\n", n, l.name.c_str());
        } catch (const shmkit::Error& e) {
          std::fprintf(stderr, "shmkit: %s: %s\n", l.name.c_str(), e.what());
        }
      }
    }
    return 0;
  }
  if (a.positional.empty()) throw UsageError("rm needs NAME or --stale");
  for (auto& n : a.positional) Segment::remove(segment_name(n));
  return 0;
}

// Another process may cut a segment's file short (ftruncate) while this tool reads it through
// its mapping; the next touch of a page past the new end raises SIGBUS. The tool reads headers
// with pread where it can, and for the rest (heap walks) turns that signal into the one-line
// error and exit status 1 that every other failure gets, instead of a crash.
void on_sigbus(int, siginfo_t* info, void*) {
  char msg[160];
  int n = std::snprintf(msg, sizeof msg,
                        "shmkit: a segment's file was cut short by another process while being read "
                        "(SIGBUS at %p)\n",
                        info->si_addr);
  if (n > 0) (void)!::write(2, msg, static_cast<std::size_t>(std::min<int>(n, sizeof msg - 1)));
  ::_exit(1);
}

void exit_cleanly_on_sigbus() {
  struct sigaction sa {};
  sa.sa_sigaction = on_sigbus;
  sa.sa_flags = SA_SIGINFO;
  sigemptyset(&sa.sa_mask);
  if (::sigaction(SIGBUS, &sa, nullptr) != 0) std::perror("shmkit: sigaction(SIGBUS)");
}

}  // namespace
}  // namespace shmkit::tool

int main(int argc, char** argv) {
  using namespace shmkit::tool;
  exit_cleanly_on_sigbus();
  if (argc < 2 || std::strcmp(argv[1], "--help") == 0 || std::strcmp(argv[1], "-h") == 0) {
    std::fputs(kUsage, argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  std::string cmd = argv[1];
  for (int i = 2; i < argc; ++i)
    if (std::strcmp(argv[i], "--help") == 0 || std::strcmp(argv[i], "-h") == 0) {
      auto it = kHelp.find(cmd);
      if (it == kHelp.end()) break;
      std::fputs(it->second.c_str(), stdout);
      return 0;
    }
  try {
    if (cmd == "create") return cmd_create(parse(argc, argv, {"--size", "--capacity", "--base", "--mode"}, {}));
    if (cmd == "ls") return cmd_ls(parse(argc, argv, {}, {"--json"}));
    if (cmd == "info") return cmd_info(parse(argc, argv, {}, {"--json"}));
    if (cmd == "verify") return cmd_verify(parse(argc, argv, {}, {}));
    if (cmd == "rm") return cmd_rm(parse(argc, argv, {}, {"--stale"}));
    throw UsageError("unknown command '" + cmd + "'");
  } catch (const UsageError& e) {
    std::fprintf(stderr, "shmkit: %s (run 'shmkit --help')\n", e.what());
    return 2;
  } catch (const shmkit::Error& e) {
    std::fprintf(stderr, "shmkit: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "shmkit: %s\n", e.what());
    return 1;
  }
}
