// Tests the io_uring transport's SpanArena against a model: size classes, placement at the lowest
// free offset, coalescing a freed span with free neighbours on both sides, exhaustion as a status,
// and that the region never moves. The model is a plain sorted list of live spans whose gaps are
// searched in address order.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <optional>
#include <random>
#include <vector>

#include "shmkit/transport/span_arena.hpp"

namespace {
using shmkit::transport::AllocStatus;
using shmkit::transport::SpanArena;
constexpr std::size_t KiB = 1024, MiB = 1024 * 1024;

// The model: live spans offset -> size; first fit = the lowest gap that is big enough.
struct Model {
  std::size_t capacity;
  std::map<std::size_t, std::size_t> live;
  std::optional<std::size_t> allocate(std::size_t cls) {
    std::size_t at = 0;
    for (auto& [off, len] : live) {
      if (off - at >= cls) break;
      at = off + len;
    }
    if (capacity - at < cls) return std::nullopt;
    live.emplace(at, cls);
    return at;
  }
  std::vector<std::pair<std::size_t, std::size_t>> gaps() const {
    std::vector<std::pair<std::size_t, std::size_t>> g;
    std::size_t at = 0;
    for (auto& [off, len] : live) {
      if (off > at) g.emplace_back(at, off - at);
      at = off + len;
    }
    if (at < capacity) g.emplace_back(at, capacity - at);
    return g;
  }
};

TEST(SpanArena, SizeClasses) {
  EXPECT_EQ(SpanArena::size_class(0), 256u);
  EXPECT_EQ(SpanArena::size_class(1), 256u);
  EXPECT_EQ(SpanArena::size_class(256), 256u);
  EXPECT_EQ(SpanArena::size_class(257), 2 * KiB);
  EXPECT_EQ(SpanArena::size_class(2 * KiB), 2 * KiB);
  EXPECT_EQ(SpanArena::size_class(2 * KiB + 1), 4 * KiB);
  EXPECT_EQ(SpanArena::size_class(100 * KiB), 128 * KiB);
  EXPECT_EQ(SpanArena::size_class(2 * MiB), 2 * MiB);
  EXPECT_EQ(SpanArena::size_class(2 * MiB + 1), 0u);

  SpanArena a(8 * MiB);
  SpanArena::Span s;
  ASSERT_EQ(a.try_allocate(3000, &s), AllocStatus::ok);
  EXPECT_EQ(s.size, 4 * KiB);
  EXPECT_EQ(a.try_allocate(2 * MiB + 1, &s), AllocStatus::too_large);
  EXPECT_TRUE(a.check_invariants());
}

TEST(SpanArena, FrontPlacementAndExhaustion) {
  SpanArena a(64 * KiB);
  std::vector<SpanArena::Span> s(4);
  for (int i = 0; i < 4; ++i) {
    ASSERT_EQ(a.try_allocate(16 * KiB, &s[i]), AllocStatus::ok);
    EXPECT_EQ(s[i].offset, static_cast<std::size_t>(i) * 16 * KiB);  // packed from the front
  }
  SpanArena::Span extra;
  EXPECT_EQ(a.try_allocate(1, &extra), AllocStatus::exhausted);
  EXPECT_EQ(a.bytes_in_use(), 64 * KiB);
  // A hole in the middle is reused before anything after it; a small span goes to its front.
  ASSERT_TRUE(a.free(s[1]));
  ASSERT_EQ(a.try_allocate(10, &extra), AllocStatus::ok);
  EXPECT_EQ(extra.offset, 16 * KiB);
  EXPECT_FALSE(a.free(s[1]));  // already freed (and its offset now holds `extra`, a smaller span)
  EXPECT_TRUE(a.check_invariants());
}

TEST(SpanArena, CoalescesWithBothNeighbours) {
  SpanArena a(4 * 8 * KiB);
  std::vector<SpanArena::Span> s(4);
  for (auto& x : s) ASSERT_EQ(a.try_allocate(8 * KiB, &x), AllocStatus::ok);
  ASSERT_TRUE(a.free(s[0]));
  ASSERT_TRUE(a.free(s[2]));
  EXPECT_EQ(a.free_spans().size(), 2u);
  // Freeing s[1] joins its left (s[0]) and right (s[2]) free neighbours into one span.
  ASSERT_TRUE(a.free(s[1]));
  auto f = a.free_spans();
  ASSERT_EQ(f.size(), 1u);
  EXPECT_EQ(f[0], std::make_pair(std::size_t{0}, 24 * KiB));
  SpanArena::Span big;
  ASSERT_EQ(a.try_allocate(16 * KiB, &big), AllocStatus::ok);  // only fits because of coalescing
  EXPECT_EQ(big.offset, 0u);
  ASSERT_TRUE(a.free(s[3]));  // right neighbour of the remaining 8 KiB free span
  ASSERT_EQ(a.free_spans().size(), 1u);
  EXPECT_EQ(a.free_spans()[0], std::make_pair(16 * KiB, 16 * KiB));
  EXPECT_TRUE(a.check_invariants());
}

TEST(SpanArena, RejectsForeignSpans) {
  SpanArena a(64 * KiB);
  SpanArena::Span s;
  ASSERT_EQ(a.try_allocate(4 * KiB, &s), AllocStatus::ok);
  SpanArena::Span wrong = s;
  wrong.size = 2 * KiB;
  EXPECT_FALSE(a.free(wrong));
  wrong = s;
  wrong.offset += 256;
  wrong.data += 256;
  EXPECT_FALSE(a.free(wrong));
  EXPECT_TRUE(a.free(s));
  EXPECT_TRUE(a.check_invariants());
  EXPECT_EQ(a.bytes_in_use(), 0u);
}

TEST(SpanArena, MatchesModelUnderRandomWorkload) {
  const std::size_t cap = 16 * MiB;
  SpanArena a(cap);
  Model m{a.capacity(), {}};
  std::byte* const base = a.base();
  std::mt19937 rng(12345);
  std::vector<SpanArena::Span> live;
  const std::size_t sizes[] = {1, 100, 256, 300, 2 * KiB, 5000, 64 * KiB, 200 * KiB, 1 * MiB, 2 * MiB};
  int exhausted = 0;
  for (int step = 0; step < 20000; ++step) {
    if (live.empty() || rng() % 100 < 55) {
      std::size_t n = sizes[rng() % std::size(sizes)];
      SpanArena::Span s;
      AllocStatus st = a.try_allocate(n, &s);
      auto expect = m.allocate(SpanArena::size_class(n));
      if (!expect) {
        ASSERT_EQ(st, AllocStatus::exhausted) << "step " << step;
        ++exhausted;
      } else {
        ASSERT_EQ(st, AllocStatus::ok) << "step " << step;
        ASSERT_EQ(s.offset, *expect) << "step " << step;
        ASSERT_GE(s.size, n);
        std::memset(s.data, step & 0xff, s.size);  // the span is really writable memory
        live.push_back(s);
      }
    } else {
      std::size_t i = rng() % live.size();
      ASSERT_TRUE(a.free(live[i]));
      m.live.erase(live[i].offset);
      live[i] = live.back();
      live.pop_back();
    }
    ASSERT_EQ(a.free_spans(), m.gaps()) << "step " << step;  // same free spans, fully coalesced
    if (step % 64 == 0) {
      ASSERT_TRUE(a.check_invariants()) << "step " << step;
    }
  }
  EXPECT_GT(exhausted, 0) << "the workload should reach exhaustion at least once";
  EXPECT_EQ(a.base(), base);  // never moved
  for (auto& s : live) ASSERT_TRUE(a.free(s));
  EXPECT_EQ(a.free_spans().size(), 1u);
  EXPECT_TRUE(a.check_invariants());
}

}  // namespace
