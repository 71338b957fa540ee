// Formatting for the shmkit command: text tables and JSON for ls and info, and the checks of verify.
#pragma once

#include <string>
#include <vector>

#include "inspect.hpp"

namespace shmkit::tool {

// Heap figures for `info`; present == false when the segment holds no heap.
struct HeapReport {
  bool present = false;
  std::vector<std::pair<std::string, std::string>> fields;  // name -> JSON value (already encoded)
  std::vector<std::string> named_objects;
};
HeapReport heap_report(const Segment& seg);

// Frees heap blocks owned by dead processes and gives back dead threads' caches; returns how
// many it reclaimed (0 when the segment has no heap).
std::size_t reclaim_dead(const Segment& seg);

// Every inconsistency found in the segment (header, attach table, heap). Empty means healthy.
std::vector<std::string> verify_segment(const Segment& seg);

std::string json_string(const std::string& s);
std::string list_json(const std::vector<Listed>& list);
std::string list_table(const std::vector<Listed>& list);
std::string info_json(const SegmentSummary& s, const HeapReport& heap);
std::string info_text(const SegmentSummary& s, const HeapReport& heap);

}  // namespace shmkit::tool
