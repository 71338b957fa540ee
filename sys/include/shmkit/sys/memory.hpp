/// Memory mappings and memory files: mmap/munmap, memfd_create, the page size.
///
/// Convention of the whole syscall layer (liburing's): each wrapper is noexcept and returns the
/// kernel's result, or -errno on failure; EINTR is retried where the call is restartable without
/// side effects. Set-up paths turn a negative result into shmkit::Error with context
/// (sys::check in error.hpp); hot paths propagate the -errno value.
#pragma once

#include <sys/types.h>

#include <cstddef>

namespace shmkit::sys {

/// On success *out is the mapping's address and 0 is returned.
[[nodiscard]] int mmap(void** out, void* addr, std::size_t len, int prot, int flags, int fd,
                       off_t offset) noexcept;
[[nodiscard]] int munmap(void* addr, std::size_t len) noexcept;
/// An anonymous memory file (fd or -errno); see file.hpp for what can be done with the fd.
[[nodiscard]] int memfd_create(const char* name, unsigned flags) noexcept;

std::size_t page_size() noexcept;

}  // namespace shmkit::sys
