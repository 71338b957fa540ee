// The heap's part of `shmkit info` and `shmkit verify`.
#include "report.hpp"

namespace shmkit::tool {

HeapReport heap_report(const Segment& seg) {
  HeapReport r;
  r.present = seg.header().root(RootSlot::heap).load(std::memory_order_acquire) != 0;
  return r;
}

std::vector<std::string> verify_segment(const Segment& seg) {
  std::vector<std::string> findings;
  const SegmentHeader& h = seg.header();
  for (std::size_t i = 0; i < SegmentHeader::kAttachSlots; ++i) {
    auto pid = h.attach[i].pid.load(std::memory_order_acquire);
    if (pid < 0 || pid > (1 << 22)) findings.push_back("attach entry " + std::to_string(i) + " has pid " +
                                                       std::to_string(pid) + ", outside the range of pids");
  }
  return findings;
}

}  // namespace shmkit::tool
