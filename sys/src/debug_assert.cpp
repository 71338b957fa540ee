#include "shmkit/sys/debug_assert.hpp"

#include <cstdio>
#include <cstdlib>

namespace shmkit::detail {

void assert_internal_failed(const char* expr, const char* file, int line, const char* func) noexcept {
  std::fprintf(stderr, "shmkit: internal invariant failed: %s at %s:%d (%s)\n", expr, file, line, func);
  std::abort();
}

}  // namespace shmkit::detail
