#include "inspect.hpp"

#include <dirent.h>
#include <fcntl.h>

#include <array>
#include <cstring>

#include "shmkit/sys/error.hpp"
#include "shmkit/sys/syscall.hpp"

namespace shmkit::tool {

bool is_stale(const SegmentSummary& s) {
  if (s.in_use) return false;
  if (s.state == static_cast<std::uint32_t>(SegmentState::initialising))
    return sys::liveness(s.creator) == sys::Liveness::dead;
  bool any_dead = false;
  for (auto& a : s.attached) {
    if (a.liveness != sys::Liveness::dead) return false;
    any_dead = true;
  }
  return any_dead;
}

std::string segment_name(const std::string& typed) {
  return !typed.empty() && typed[0] == '/' ? typed : "/" + typed;
}

SegmentSummary summarise(const Segment& seg, bool in_use) {
  SegmentSummary s;
  s.in_use = in_use;
  const SegmentHeader& h = seg.header();
  s.name = seg.name();
  s.base = h.base;
  s.size = seg.size();
  s.capacity = h.capacity;
  s.version = h.version;
  s.state = h.state.load(std::memory_order_acquire);
  s.creator = h.creator;
  s.attached = seg.attached();
  s.at_home = seg.at_home();
  long fs = sys::file_size(seg.fd());
  s.file_size = fs > 0 ? static_cast<std::uint64_t>(fs) : 0;
  s.stale = is_stale(s);
  return s;
}

std::vector<Listed> list_segments() {
  std::vector<Listed> out;
  DIR* d = ::opendir("/dev/shm");
  if (d == nullptr) throw_errno("cannot list /dev/shm", errno);
  while (dirent* e = ::readdir(d)) {
    if (e->d_name[0] == '.') continue;
    std::string path = std::string("/dev/shm/") + e->d_name;
    int fd = sys::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) continue;
    struct ::stat st;
    Segment::FileKind kind = Segment::FileKind::other;
    try {
      if (sys::fstat(fd, &st) == 0 && S_ISREG(st.st_mode)) kind = Segment::inspect_file(fd);
    } catch (const Error&) {
      // unreadable: not listed
    }
    (void)sys::close(fd);
    if (kind != Segment::FileKind::segment && kind != Segment::FileKind::incomplete) continue;
    Listed l;
    l.name = std::string("/") + e->d_name;
    try {
      bool in_use = Segment::in_use(l.name);
      if (kind == Segment::FileKind::incomplete) {
        l.error = "segment " + l.name + ": incomplete: zero-filled with no header (its creator died after sizing it)";
        l.stale = !in_use;
      } else {
        try {
          SegmentOptions o;
          o.attach = false;
          o.relocate = Relocate::allowed;
          o.open_timeout = std::chrono::milliseconds(200);
          o.allow_other_owner = true;
          Segment seg = Segment::open(l.name, o);
          l.summary = summarise(seg, in_use);
          l.stale = l.summary->stale;
        } catch (const Error& err) {
          l.error = err.what();
          l.stale = err.code() == Errc::owner_dead && !in_use;
        }
      }
    } catch (const Error&) {  // removed while listing, or cannot be queried
      continue;
    }
    out.push_back(std::move(l));
  }
  ::closedir(d);
  return out;
}

}  // namespace shmkit::tool
