#include "file_users.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include <cstdio>
#include <cstring>

#include "shmkit/sys/syscall.hpp"

namespace shmkit::detail {

namespace {

// true when /proc/PID/maps lists a mapping of (dev, ino). A process we may not inspect, or one
// that exits while we read, does not count (the mapped lock covers every Segment anyway).
bool maps_file(const char* pid, dev_t dev, ino_t ino) noexcept {
  char path[64];
  std::snprintf(path, sizeof path, "/proc/%s/maps", pid);
  int fd = sys::open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  // Each line: "lo-hi perms offset MAJ:MIN inode [path]". Read in blocks, parse whole lines.
  char buf[16384];
  std::size_t have = 0;
  bool found = false;
  for (;;) {
    ssize_t n = sys::read(fd, buf + have, sizeof buf - 1 - have);
    if (n <= 0) break;
    have += static_cast<std::size_t>(n);
    buf[have] = '\0';
    char* line = buf;
    while (char* nl = std::strchr(line, '\n')) {
      *nl = '\0';
      unsigned maj = 0, min = 0;
      unsigned long long inode = 0;
      if (std::sscanf(line, "%*s %*s %*s %x:%x %llu", &maj, &min, &inode) == 3 && inode == ino &&
          makedev(maj, min) == dev) {
        found = true;
        break;
      }
      line = nl + 1;
    }
    if (found) break;
    have = static_cast<std::size_t>(buf + have - line);
    std::memmove(buf, line, have);
    if (have == sizeof buf - 1) have = 0;  // a line longer than the buffer: skip it
  }
  (void)sys::close(fd);
  return found;
}

}  // namespace

int hold_mapped_lock(int fd) noexcept { return sys::ofd_lock(fd, F_RDLCK, kMappedLockByte, 1); }

bool file_in_use(int fd) noexcept {
  // A write lock conflicts with every read lock held through another open file description.
  int r = sys::ofd_lock_conflicts(fd, F_WRLCK, kMappedLockByte, 1);
  if (r != 0) return true;
  struct ::stat st;
  if (sys::fstat(fd, &st) != 0) return true;
  DIR* d = ::opendir("/proc");
  if (d == nullptr) return true;
  bool found = false;
  while (dirent* e = ::readdir(d)) {
    if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
    if (maps_file(e->d_name, st.st_dev, st.st_ino)) {
      found = true;
      break;
    }
  }
  ::closedir(d);
  return found;
}

}  // namespace shmkit::detail
