// The heap's part of `shmkit info` and `shmkit verify`. A segment without a heap root has no heap
// (nothing is created by inspecting it).
#include <fmt/format.h>

#include "report.hpp"
#include "shmkit/heap/heap.hpp"
#include "shmkit/sys/error.hpp"

namespace shmkit::tool {

namespace {
bool has_heap(const Segment& seg) {
  return seg.header().root(RootSlot::heap).load(std::memory_order_acquire) != 0;
}
}  // namespace

void fill(HeapReport& r, Heap& heap);

HeapReport heap_report(const Segment& seg) {
  HeapReport r;
  if (!has_heap(seg)) return r;
  auto& s = const_cast<Segment&>(seg);
  r.present = true;
  try {
    fill(r, Heap::attach(s));
  } catch (const Error& e) {
    r.fields.emplace_back("error", json_string(e.what()));
  }
  Heap::detach(s);
  return r;
}

void fill(HeapReport& r, Heap& heap) {
  HeapStats st = heap.stats();
  auto num = [&](const char* k, std::uint64_t v) { r.fields.emplace_back(k, std::to_string(v)); };
  num("bytes_in_use", st.bytes_in_use);
  num("blocks_in_use", st.blocks_in_use);
  num("bytes_free", st.bytes_free);
  num("bytes_cached", st.bytes_cached);
  num("largest_free", st.largest_free);
  num("free_chunks", st.free_chunks);
  r.fields.emplace_back("fragmentation", fmt::format("{:.4f}", st.fragmentation));
  num("high_water", st.high_water);
  num("bytes_owned", st.bytes_owned);
  num("repairs", st.repairs);
  num("caches_reclaimed", st.caches_reclaimed);
  num("owned_reclaimed", st.owned_reclaimed);
  num("errors", st.errors);
  num("caches_in_use", st.caches_in_use);
  num("named_objects", st.named_objects);
  r.named_objects = heap.names();
}

std::size_t reclaim_dead(const Segment& seg) {
  if (!has_heap(seg)) return 0;
  auto& s = const_cast<Segment&>(seg);
  std::size_t n = Heap::attach(s).reclaim_dead();
  Heap::detach(s);
  return n;
}

std::vector<std::string> verify_segment(const Segment& seg) {
  std::vector<std::string> findings;
  const SegmentHeader& h = seg.header();
  for (std::size_t i = 0; i < SegmentHeader::kAttachSlots; ++i) {
    auto pid = h.attach[i].pid.load(std::memory_order_acquire);
    if (pid < 0 || pid > (1 << 22))
      findings.push_back("attach entry " + std::to_string(i) + " has pid " + std::to_string(pid) +
                         ", outside the range of pids");
  }
  if (!has_heap(seg)) return findings;
  auto& s = const_cast<Segment&>(seg);
  try {
    Heap& heap = Heap::attach(s);
    for (auto& f : heap.verify(VerifyMode::live)) findings.push_back(fmt::format("heap at offset {:#x}: {}", f.offset, f.message));
    Heap::detach(s);
  } catch (const Error& e) {
    findings.push_back(std::string("heap: ") + e.what());
  }
  return findings;
}

}  // namespace shmkit::tool
