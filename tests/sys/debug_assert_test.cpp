// SHMKIT_ASSERT_INTERNAL (<shmkit/sys/debug_assert.hpp>): with SHMKIT_DEBUG (the debug and asan
// presets) a false internal invariant aborts with a message naming it, also inside the library
// (futex_wake of nobody); without it the condition is compiled out and never evaluated.
#include "shmkit/sys/debug_assert.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <cstdint>

#include "shmkit/sys/futex_word.hpp"

namespace {

bool counted_false(int& evaluations) {
  ++evaluations;
  return false;
}

#ifdef SHMKIT_DEBUG

TEST(DebugAssert, FalseInvariantAbortsNamingIt) {
  int evaluations = 0;
  EXPECT_DEATH(SHMKIT_ASSERT_INTERNAL(counted_false(evaluations)),
               "internal invariant failed: counted_false\\(evaluations\\) at .*debug_assert_test.cpp");
}

TEST(DebugAssert, TrueInvariantPasses) {
  int evaluations = 0;
  SHMKIT_ASSERT_INTERNAL(!counted_false(evaluations));
  EXPECT_EQ(evaluations, 1);
}

TEST(DebugAssert, LibraryChecksItsOwnInvariants) {
  std::atomic<std::uint32_t> word{0};
  EXPECT_DEATH((void)shmkit::sys::futex_wake(word, 0), "internal invariant failed: count > 0");
}

#else

TEST(DebugAssert, CompiledOutWithoutShmkitDebug) {
  int evaluations = 0;
  SHMKIT_ASSERT_INTERNAL(counted_false(evaluations));
  EXPECT_EQ(evaluations, 0);
}

#endif

}  // namespace
