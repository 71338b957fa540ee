// EXPECT_VERIFY_CLEAN(heap): a gtest expectation that Heap::verify() finds nothing, printing the
// first 20 findings (offset and message) when it does. Shared by the heap tests.
#pragma once
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "shmkit/heap/heap.hpp"

namespace shmkit::testing {

inline std::string findings_text(const std::vector<shmkit::VerifyFinding>& f) {
  std::string s;
  for (std::size_t i = 0; i < f.size() && i < 20; ++i) s += "  @" + std::to_string(f[i].offset) + ": " + f[i].message + "\n";
  return s;
}

}  // namespace shmkit::testing

#define EXPECT_VERIFY_CLEAN(heap)                                                                  \
  do {                                                                                             \
    auto f_ = (heap).verify();                                                                     \
    EXPECT_TRUE(f_.empty()) << f_.size() << " findings:\n" << ::shmkit::testing::findings_text(f_); \
  } while (0)
