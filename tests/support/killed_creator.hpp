// Test support: the file a segment creator leaves when it is SIGKILLed after sizing the file and
// before writing the header (what every creator before the header-first order could leave).
// A real child process takes the creator's steps — create the file exclusively, take its flock,
// size it with fallocate (zero-filled) — and is killed there by SIGKILL.
#pragma once

#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <unistd.h>

#include <string>

#include "testing.hpp"

namespace shmkit::testing {

// Returns true when the child got to the point of death and died of SIGKILL.
inline bool leave_file_of_creator_killed_while_sizing(const std::string& name, off_t size) {
  SharedMem flag(4096);
  auto* sized = reinterpret_cast<volatile int*>(flag.base);
  Child creator([&] {
    int fd = ::shm_open(name.c_str(), O_RDWR | O_CREAT | O_EXCL, 0600);
    if (fd < 0 || ::flock(fd, LOCK_EX) != 0 || ::posix_fallocate(fd, 0, size) != 0) return 1;
    *sized = 1;
    ::pause();  // killed here, between sizing the file and writing the header
    return 0;
  });
  for (int i = 0; i < 10000 && *sized == 0; ++i) ::usleep(500);
  if (*sized == 0) return false;
  creator.kill(SIGKILL);
  return creator.wait() == -SIGKILL;
}

}  // namespace shmkit::testing
