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
  bool stale = false;  // see is_stale()
};

// Stale: a segment whose recorded processes all died without detaching (at least one dead attach
// entry and no live one), or whose creator died while initialising it. A segment that was closed
// cleanly, or created by `shmkit create` and never used, is not stale.
bool is_stale(const SegmentSummary& s);

// Opens NAME without recording this process (Relocate::allowed, so an occupied home address does
// not prevent inspection) and summarises it. Throws shmkit::Error for anything that is not a
// valid, ready shmkit segment.
SegmentSummary summarise(const Segment& seg);

// Every file under /dev/shm whose first bytes carry shmkit's magic. Headers are read with pread
// only; segments that fail validation are listed with `error` set instead of being skipped.
struct Listed {
  std::string name;
  std::optional<SegmentSummary> summary;
  std::string error;
  bool stale = false;  // summary->stale, or a creator that died while initialising
};
std::vector<Listed> list_segments();

}  // namespace shmkit::tool
