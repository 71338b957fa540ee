// Hostile segments, the segment header: a real named segment (with a heap) whose header fields
// are damaged one at a time — magic, version, header size, size, capacity, base, state, the heap
// root — or whose file is cut shorter than the size its header claims. `shmkit info`, `shmkit
// verify` and a process calling Segment::open (+ Heap::attach) must refuse it with an error (a
// one-line message on stderr and a non-zero exit for the tools, shmkit::Error for the process),
// never crash or hang. And a header rewritten while this process maps the segment: a reopen
// never takes the rewritten geometry (ReopenTrustsARewrittenHeader).
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <ostream>
#include <string>

#include "shmkit/heap/heap.hpp"
#include "shmkit/shm/segment.hpp"
#include "shmkit/sys/error.hpp"
#include "testing.hpp"

namespace shmkit {
namespace {

using testing::Child;
using testing::CommandResult;
using testing::ShmNameGuard;

struct HeaderDamage {
  const char* name;
  std::function<void(Segment&)> apply;  // damages the mapped header
  bool truncate_file = false;           // also cut the file to half its size
};
void PrintTo(const HeaderDamage& d, std::ostream* os) { *os << d.name; }

std::vector<HeaderDamage> header_damages() {
  return {
      {"magic", [](Segment& s) { s.header().magic = 0x1234; }},
      {"version", [](Segment& s) { s.header().version = 99; }},
      {"header_size", [](Segment& s) { s.header().header_size = 12; }},
      {"size_zero", [](Segment& s) { s.header().size.store(0); }},
      {"size_past_capacity", [](Segment& s) { s.header().size.store(s.header().capacity + 4096); }},
      {"size_past_file", [](Segment& s) { s.header().size.store(s.header().capacity); }},
      {"size_misaligned", [](Segment& s) { s.header().size.store(s.header().size.load() + 1); }},
      {"capacity_zero", [](Segment& s) { s.header().capacity = 0; }},
      {"capacity_huge", [](Segment& s) { s.header().capacity = std::uint64_t{1} << 50; }},
      {"base_zero", [](Segment& s) { s.header().base = 0; }},
      {"base_kernel_half", [](Segment& s) { s.header().base = 0xffff800000000000ULL; }},
      {"base_wraps_with_capacity", [](Segment& s) { s.header().base = 0x7ffffffff000ULL - 4096; }},
      {"state_garbage", [](Segment& s) { s.header().state.store(77); }},
      {"state_initialising", [](Segment& s) { s.header().state.store(1); }},
      {"file_truncated", [](Segment&) {}, true},
  };
}

std::string rc_text(int rc) {
  if (rc == -1000) return "HUNG";
  if (rc < 0) return "KILLED BY SIGNAL " + std::to_string(-rc);
  return "exit " + std::to_string(rc);
}

class HeaderDamageTest : public ::testing::TestWithParam<HeaderDamage> {};

TEST_P(HeaderDamageTest, RefusedWithAnErrorEverywhere) {
  const HeaderDamage& d = GetParam();
  ShmNameGuard name(testing::unique_name(std::string("hostile-hdr-") + d.name));
  {
    SegmentOptions o;
    o.capacity = std::size_t{64} << 20;
    o.attach = false;
    Segment seg = Segment::create(name.name(), std::size_t{1} << 20, o);
    Heap& heap = Heap::attach(seg);
    (void)heap.find_or_construct<std::uint64_t>("counter", std::uint64_t{1});
    Heap::detach(seg);
    d.apply(seg);
    if (d.truncate_file) {
      ASSERT_EQ(::ftruncate(seg.fd(), static_cast<off_t>(seg.size() / 2)), 0);
    }
  }
  const std::string tool = SHMKIT_TOOL_PATH;
  for (const char* cmd : {"info", "verify"}) {
    CommandResult r = testing::run_command({tool, cmd, name.name()}, std::chrono::seconds(10));
    EXPECT_GT(r.exit_code, 0) << "shmkit " << cmd << ": " << rc_text(r.exit_code) << "\n" << r.out << r.err;
    if (r.exit_code > 0) {
      // One error line naming the segment (log lines, "[time] [shmkit pid] [level] ...", aside:
      // SHMKIT_LOG decides those).
      int error_lines = 0;
      std::size_t pos = 0;
      while (pos < r.err.size()) {
        std::size_t nl = r.err.find('\n', pos);
        std::string line = r.err.substr(pos, nl == std::string::npos ? std::string::npos : nl - pos);
        if (!line.empty() && line[0] != '[') {
          ++error_lines;
          EXPECT_NE(line.find(name.name()), std::string::npos) << line;
        }
        if (nl == std::string::npos) break;
        pos = nl + 1;
      }
      EXPECT_EQ(error_lines, 1) << r.err;
    }
  }
  Child child([&] {
    SegmentOptions o;
    o.open_timeout = std::chrono::milliseconds(500);
    try {
      Segment seg = Segment::open(name.name(), o);
      (void)Heap::attach(seg).verify();
      Heap::detach(seg);
    } catch (const Error&) {
      return 10;
    }
    return 0;
  });
  int rc = child.wait(std::chrono::seconds(10));
  EXPECT_EQ(rc, 10) << "Segment::open of a damaged header: " << rc_text(rc) << " (0 = accepted it)";
}

INSTANTIATE_TEST_SUITE_P(Fields, HeaderDamageTest, ::testing::ValuesIn(header_damages()),
                         [](const ::testing::TestParamInfo<HeaderDamage>& i) { return std::string(i.param.name); });

}  // namespace
}  // namespace shmkit

namespace shmkit {
namespace {

// Issue 14 item 1: a second Segment::open of a segment this process already maps reuses the
// mapping; another process rewrites capacity and size in the header (and extends the file to
// match). The reopen must not take the rewritten geometry: pointer_at never returns an address
// past this process's mapping — here, inside a neighbouring mapping placed right after it — and
// closing both Segment objects never unmaps the neighbour.
TEST(HostileHeader, ReopenTrustsARewrittenHeader) {
  ShmNameGuard name(testing::unique_name("hostile-reopen"));
  constexpr std::size_t kCap = std::size_t{64} << 20;
  // The process that maps the segment and its neighbour runs in a child: a wrong munmap or a
  // write through a bad pointer is then an exit code, not a crashed test runner.
  Child victim([&]() -> int {
    SegmentOptions o;
    o.capacity = kCap;
    Segment first = Segment::create(name.name(), 1 << 20, o);
    const std::size_t page = 4096;
    void* want = first.base() + kCap;
    void* neighbour = ::mmap(want, page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE,
                             -1, 0);
    if (neighbour != want) return 20;  // cannot set the scene
    *static_cast<volatile char*>(neighbour) = 'N';
    // Another process rewrites the geometry through its own mapping and extends the file.
    Child rewriter([&] {
      SegmentOptions ro;
      ro.attach = false;
      Segment s = Segment::open(name.name(), ro);
      if (::ftruncate(s.fd(), static_cast<off_t>(2 * kCap)) != 0) return 1;
      s.header().capacity = 2 * kCap;
      s.header().size.store(2 * kCap);
      return 0;
    });
    if (rewriter.wait() != 0) return 21;
    int result = 0;
    try {
      Segment second = Segment::open(name.name());
      if (second.capacity() > kCap) result = 1;                       // took the rewritten capacity
      if (second.pointer_at(kCap + 16) != nullptr) result = 2;         // an address in the neighbour
      if (first.pointer_at(kCap + 16) != nullptr) result = 3;
      first.close();  // the other object closes last: it alone decides what is unmapped
      second.close();
    } catch (const Error& e) {
      if (e.code() != Errc::corrupt) result = 4;  // refusing the reopen is fine; as corrupt
    }
    first.close();
    // The neighbour must still be mapped and intact (msync fails with ENOMEM on an unmapped page).
    if (::msync(neighbour, page, MS_ASYNC) != 0) return 5;
    if (*static_cast<volatile char*>(neighbour) != 'N') return 6;
    ::munmap(neighbour, page);
    return result;
  });
  int rc = victim.wait(std::chrono::seconds(20));
  EXPECT_EQ(rc, 0) << "1: reopen took the rewritten capacity; 2/3: pointer_at past the mapping; 4: not "
                      "Errc::corrupt; 5: closing unmapped the neighbouring mapping; 6: neighbour changed; "
                   << rc_text(rc);
}

}  // namespace
}  // namespace shmkit
