#include "shmkit/sys/memory.hpp"

#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>

namespace shmkit::sys {

int mmap(void** out, void* addr, std::size_t len, int prot, int flags, int fd, off_t offset) noexcept {
  void* p = ::mmap(addr, len, prot, flags, fd, offset);
  if (p == MAP_FAILED) return -errno;
  *out = p;
  return 0;
}
int munmap(void* addr, std::size_t len) noexcept { return ::munmap(addr, len) == 0 ? 0 : -errno; }
int memfd_create(const char* name, unsigned flags) noexcept {
  int fd = ::memfd_create(name, flags);
  return fd >= 0 ? fd : -errno;
}

std::size_t page_size() noexcept {
  static const std::size_t ps = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
  return ps;
}

}  // namespace shmkit::sys
