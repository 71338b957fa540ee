// Reading segments for the shmkit command: a summary of one segment that never needs to map it at
// its home address, and the list of shmkit segments under /dev/shm.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "shmkit/shm/segment.hpp"

namespace shmkit::tool {

struct SegmentSummary {
  std::string name;  // "/NAME"
  std::uint64_t base = 0, size = 0, capacity = 0, file_size = 0;
  std::uint32_t version = 0, state = 0;
  sys::ProcessIdentity creator;
  std::vector<AttachedProcess> attached;
  bool at_home = false;
  bool in_use = false;  // Segment::in_use() before this tool mapped it
  bool stale = false;   // see is_stale()
};

// Stale: no live process maps the segment (Segment::in_use() is false — the attach table alone
// cannot say, forked children are not in it), and its recorded processes all died without
// detaching (at least one dead attach entry and no live one), or its creator died while
// initialising it. A segment that was closed cleanly, or created by `shmkit create` and never
// used, is not stale.
bool is_stale(const SegmentSummary& s);

// Summarises a segment this tool opened (without recording itself; Relocate::allowed).
// `in_use` is Segment::in_use(name) asked before the tool mapped it (the tool's own mapping
// would count).
SegmentSummary summarise(const Segment& seg, bool in_use);

// NAME as the user typed it, with the leading '/' added when it was left out ("seg" -> "/seg").
std::string segment_name(const std::string& typed);

// Every file under /dev/shm whose first bytes carry shmkit's magic, and every incomplete one
// (Segment::FileKind::incomplete: zero-filled, no header). Headers are read with pread first;
// segments that fail validation are listed with `error` set instead of being skipped.
struct Listed {
  std::string name;
  std::optional<SegmentSummary> summary;
  std::string error;
  bool stale = false;  // summary->stale, or unused and left by a creator that died initialising it
};
std::vector<Listed> list_segments();

}  // namespace shmkit::tool
