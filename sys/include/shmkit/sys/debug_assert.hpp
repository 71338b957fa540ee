/// Internal invariant checks for debug builds, like mimalloc's mi_assert_internal.
///
/// SHMKIT_ASSERT_INTERNAL(cond) states a fact that shmkit's own code guarantees (never a check of
/// input: a caller's argument or anything a peer may have written to shared memory is checked
/// always and reported as an error). With SHMKIT_DEBUG defined (the debug and asan presets set
/// -DSHMKIT_DEBUG=ON) a false condition prints the expression and where it is, then aborts.
/// Without it the macro compiles to nothing: `cond` is not evaluated, only named (so a variable
/// used only in assertions does not warn as unused).
#pragma once

namespace shmkit::detail {
/// Prints "shmkit: internal invariant failed: <expr> at <file>:<line> (<func>)" and aborts.
/// Always defined in shmkit::sys, so code built with and without SHMKIT_DEBUG links together.
[[noreturn]] void assert_internal_failed(const char* expr, const char* file, int line,
                                         const char* func) noexcept;
}  // namespace shmkit::detail

#ifdef SHMKIT_DEBUG
#define SHMKIT_ASSERT_INTERNAL(cond) \
  ((cond) ? void(0) : ::shmkit::detail::assert_internal_failed(#cond, __FILE__, __LINE__, __func__))
#else
#define SHMKIT_ASSERT_INTERNAL(cond) static_cast<void>(sizeof((cond) ? 1 : 0))
#endif
