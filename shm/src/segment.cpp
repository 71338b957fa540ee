#include "shmkit/shm/segment.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <thread>

#include "file_users.hpp"
#include "mapping_registry.hpp"
#include "shmkit/locks/lock.hpp"
#include "shmkit/shm/admin_guard.hpp"
#include "shmkit/sys/error.hpp"
#include "shmkit/sys/futex_word.hpp"
#include "shmkit/sys/log.hpp"
#include "shmkit/sys/syscall.hpp"

namespace shmkit {

namespace {

constexpr std::uintptr_t kUserTop = 0x7ffffffff000;  // x86-64 / 47-bit user half
constexpr std::uintptr_t kMinBase = 0x10000;         // above vm.mmap_min_addr

std::size_t round_up(std::size_t v, std::size_t a) { return (v + a - 1) / a * a; }

std::string hex(std::uintptr_t v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "0x%" PRIxPTR, v);
  return buf;
}

std::uint64_t fnv1a(std::string_view s) {
  std::uint64_t h = 1469598103934665603ULL;
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ULL;
  return h;
}

// What occupies [lo, hi) in this process, from /proc/self/maps (for the address-conflict error).
std::string occupant(std::uintptr_t lo, std::uintptr_t hi) {
  std::ifstream maps("/proc/self/maps");
  std::string line, found;
  while (std::getline(maps, line)) {
    unsigned long a = 0, b = 0;
    if (std::sscanf(line.c_str(), "%lx-%lx", &a, &b) != 2) continue;
    if (a < hi && b > lo) {
      if (!found.empty()) found += "; ";
      found += line;
      if (found.size() > 400) break;
    }
  }
  return found.empty() ? "an unknown mapping" : found;
}

struct alignas(64) HeaderImage {
  std::array<std::byte, sizeof(SegmentHeader)> bytes{};
  const SegmentHeader& h() const { return *reinterpret_cast<const SegmentHeader*>(bytes.data()); }
  SegmentHeader& h() { return *reinterpret_cast<SegmentHeader*>(bytes.data()); }
  bool blank() const {
    return std::all_of(bytes.begin(), bytes.end(), [](std::byte b) { return b == std::byte{0}; });
  }
};

// The header pages: a file shorter than this cannot be touched through the mapping (SIGBUS).
std::size_t header_end() { return round_up(sizeof(SegmentHeader), sys::page_size()); }

// A file of `fsize` bytes left by a creator that died after sizing it and before writing the
// header (creators before this version sized the file first): page-multiple, at least the
// smallest segment, every byte zero. Reads the whole file: only called for a file whose header
// bytes are already known to be zero.
bool zero_filled_segment_file(int fd, long fsize) {
  const auto page = static_cast<long>(sys::page_size());
  if (fsize < static_cast<long>(SegmentHeader::kDataOffset) + page || fsize % page != 0) return false;
  std::vector<std::byte> buf(std::size_t{1} << 20);
  for (long off = 0; off < fsize;) {
    ssize_t n = sys::pread(fd, buf.data(), buf.size(), off);
    if (n <= 0) return false;
    if (!std::all_of(buf.begin(), buf.begin() + n, [](std::byte b) { return b == std::byte{0}; })) return false;
    off += n;
  }
  return true;
}

void require_valid_name(std::string_view name) {
  std::string bad = Segment::check_name(name);
  if (!bad.empty()) throw Error(Errc::invalid_argument, "invalid segment name '" + std::string(name) + "': " + bad);
}

// Ownership, checked by every way in that opens an existing file (open_named before it may
// initialise the file, adopt for a descriptor from elsewhere).
void check_owner(int fd, const SegmentOptions& o, const std::string& what) {
  struct ::stat st;
  sys::check(sys::fstat(fd, &st), what + ": fstat");
  if (!o.allow_other_owner && st.st_uid != ::geteuid())
    throw Error(Errc::permission_denied, what + ": owned by uid " + std::to_string(st.st_uid) +
                                             ", not by this user; pass allow_other_owner to open it");
}

enum class Mode { create, open, open_or_create };

}  // namespace

struct Segment::Raw {
  static std::string label(const std::string& name) { return name.empty() ? "segment" : "segment " + name; }

  static detail::MappingKey file_key(int fd, const std::string& what) {
    struct ::stat st;
    sys::check(sys::fstat(fd, &st), what + ": fstat");
    return {st.st_dev, st.st_ino};
  }

  // Maps the whole capacity of fd at `base` (MAP_FIXED_NOREPLACE). Returns nullptr when the range
  // is taken; throws on other errors.
  static std::byte* map_fixed(int fd, std::uintptr_t base, std::size_t capacity, const std::string& what) {
    void* p = nullptr;
    int r = sys::mmap(&p, reinterpret_cast<void*>(base), capacity, PROT_READ | PROT_WRITE,
                      MAP_SHARED | MAP_FIXED_NOREPLACE, fd, 0);
    if (r == -EEXIST) return nullptr;
    if (r < 0) sys::check(r, what + ": mmap of " + std::to_string(capacity) + " bytes at " + hex(base));
    if (reinterpret_cast<std::uintptr_t>(p) != base) {  // pre-4.17 kernels treat the flag as a hint
      (void)sys::munmap(p, capacity);
      return nullptr;
    }
    return static_cast<std::byte*>(p);
  }

  static std::byte* map_anywhere(int fd, std::size_t capacity, const std::string& what) {
    void* p = nullptr;
    sys::check(sys::mmap(&p, nullptr, capacity, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0), what + ": mmap");
    return static_cast<std::byte*>(p);
  }

  // The creator's choice of base: the user's, or a slot derived from `key` in the base window,
  // probing further slots when one is taken in this process.
  static std::byte* map_new(int fd, std::uintptr_t user_base, std::size_t capacity, std::string_view key,
                            const std::string& what) {
    if (user_base != 0) {
      std::byte* m = map_fixed(fd, user_base, capacity, what);
      if (m == nullptr)
        throw Error(Errc::address_in_use, what + ": base " + hex(user_base) + " is taken by " +
                                              occupant(user_base, user_base + capacity));
      return m;
    }
    std::size_t slot = std::max<std::size_t>(std::size_t{64} << 30, std::bit_ceil(capacity));
    std::size_t nslots = (kBaseWindowHigh - kBaseWindowLow) / slot;
    std::size_t first = fnv1a(key) % nslots;
    for (std::size_t i = 0; i < nslots; ++i) {
      std::uintptr_t base = kBaseWindowLow + ((first + i) % nslots) * slot;
      if (std::byte* m = map_fixed(fd, base, capacity, what)) return m;
    }
    throw Error(Errc::address_in_use, what + ": no free slot for " + std::to_string(capacity) +
                                          " bytes in the base window " + hex(kBaseWindowLow) + "-" +
                                          hex(kBaseWindowHigh));
  }

  // Lays out a fresh header in a file we hold the flock of (or a private memfd).
  static void initialise(Segment& s, std::size_t size, const SegmentOptions& o, std::string_view key) {
    const std::size_t page = sys::page_size();
    if (size == 0) throw Error(Errc::invalid_argument, label(s.name_) + ": size must be > 0");
    size = round_up(std::max(size, SegmentHeader::kDataOffset + page), page);
    std::size_t cap = o.capacity == 0 ? std::max(kDefaultCapacity, size) : round_up(o.capacity, page);
    if (cap < size)
      throw Error(Errc::invalid_argument, label(s.name_) + ": capacity " + std::to_string(cap) +
                                              " is smaller than size " + std::to_string(size));
    if (cap > kMaxCapacity)
      throw Error(Errc::invalid_argument, label(s.name_) + ": capacity " + std::to_string(cap) +
                                              " exceeds the maximum " + std::to_string(kMaxCapacity));
    if (o.base != 0 && (o.base % page != 0 || o.base < kMinBase || o.base > kUserTop - cap))
      throw Error(Errc::invalid_argument, label(s.name_) + ": base " + hex(o.base) +
                                              " is not a page-aligned user address with room for the capacity");
    // The file is emptied first: a previous creator may have died half-way (we hold the flock).
    sys::check(sys::ftruncate(s.fd_, 0), label(s.name_) + ": ftruncate");
    // The header (state initialising) is written before the file is sized, so a creator killed
    // anywhere from here on leaves a file that says what it is (INVARIANT4), never a
    // zero-filled one. Its first page holds magic and state, so even a write cut short there does.
    HeaderImage img;
    SegmentHeader& fresh = img.h();
    fresh.magic = SegmentHeader::kMagic;
    fresh.version = SegmentHeader::kLayoutVersion;
    fresh.header_size = sizeof(SegmentHeader);
    fresh.state.store(static_cast<std::uint32_t>(SegmentState::initialising), std::memory_order_relaxed);
    fresh.creator = sys::this_process();
    fresh.created_unix_ns = static_cast<std::uint64_t>(
        std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::system_clock::now().time_since_epoch()).count());
    ssize_t w = sys::check(sys::pwrite(s.fd_, img.bytes.data(), img.bytes.size(), 0), label(s.name_) + ": write header");
    if (static_cast<std::size_t>(w) != img.bytes.size())
      throw Error(Errc::system, label(s.name_) + ": short write of the header (" + std::to_string(w) + " bytes)");
    int r = sys::fallocate(s.fd_, 0, static_cast<off_t>(size));
    if (r < 0)
      throw Error(Errc::out_of_memory, label(s.name_) + ": cannot allocate " + std::to_string(size) +
                                           " bytes (is /dev/shm large enough?): " + std::strerror(-r), -r);
    s.map_ = map_new(s.fd_, o.base, cap, key, label(s.name_));
    s.capacity_ = cap;
    detail::registry_add(file_key(s.fd_, label(s.name_)), s.map_, cap);
    s.home_ = reinterpret_cast<std::uintptr_t>(s.map_);
    // The rest of the header was written zeroed: all-zero bytes are an unlocked Lock and free
    // attach entries.
    auto* h = reinterpret_cast<SegmentHeader*>(s.map_);
    h->base = s.home_;
    h->size.store(size, std::memory_order_relaxed);
    h->capacity = cap;
    // Release: an opener that sees `ready` (acquire load in wait_ready or validate) sees every
    // header field written above.
    h->state.store(static_cast<std::uint32_t>(SegmentState::ready), std::memory_order_release);
    sys::futex_wake_all(h->state);
    hold_mapped_lock(s, label(s.name_));
    log().info("created {} at {} size {} capacity {}", s.name_.empty() ? "anonymous segment" : s.name_,
               static_cast<void*>(s.map_), size, cap);
  }

  // Validates a header image read from a file of `file_size` bytes (INVARIANT1..3, 6).
  // `fd`, when given, lets a size that looks past the end of the file be re-checked: a process
  // growing the segment extends the file before it publishes the new size (INVARIANT6), so a
  // file size read after the header's size is always large enough; one read before may be stale.
  static void validate(const SegmentHeader& h, long file_size, const std::string& what, int fd = -1) {
    const std::size_t page = sys::page_size();
    if (file_size < static_cast<long>(sizeof(SegmentHeader)))
      throw Error(Errc::not_a_segment, what + ": file is " + std::to_string(file_size) +
                                           " bytes, too short for a shmkit header (" +
                                           std::to_string(sizeof(SegmentHeader)) + " bytes): not a shmkit segment");
    if (h.magic != SegmentHeader::kMagic)
      throw Error(Errc::not_a_segment, what + ": not a shmkit segment (bad magic)");
    if (h.version != SegmentHeader::kLayoutVersion)
      throw Error(Errc::version_mismatch, what + ": layout version " + std::to_string(h.version) +
                                              ", this shmkit reads version " +
                                              std::to_string(SegmentHeader::kLayoutVersion));
    if (h.header_size != sizeof(SegmentHeader))
      throw Error(Errc::corrupt, what + ": header size field " + std::to_string(h.header_size) + " != " +
                                     std::to_string(sizeof(SegmentHeader)));
    std::uint64_t size = h.size.load(std::memory_order_acquire), cap = h.capacity, base = h.base;
    if (cap % page != 0 || cap > kMaxCapacity || cap == 0)
      throw Error(Errc::corrupt, what + ": capacity field " + std::to_string(cap) + " is out of range");
    if (size % page != 0 || size <= SegmentHeader::kDataOffset || size > cap)
      throw Error(Errc::corrupt, what + ": size field " + std::to_string(size) + " is out of range (capacity " +
                                     std::to_string(cap) + ")");
    if (base % page != 0 || base < kMinBase || base > kUserTop - cap)
      throw Error(Errc::corrupt, what + ": base field " + hex(base) + " is not a valid user address");
    if (static_cast<std::uint64_t>(file_size) < size && fd >= 0) file_size = sys::file_size(fd);
    if (static_cast<std::uint64_t>(file_size) < size)
      throw Error(Errc::corrupt, what + ": truncated: the file has " + std::to_string(file_size) +
                                     " bytes but the header says " + std::to_string(size));
    std::uint32_t st = h.state.load(std::memory_order_acquire);
    if (st != static_cast<std::uint32_t>(SegmentState::ready) &&
        st != static_cast<std::uint32_t>(SegmentState::initialising))
      throw Error(Errc::corrupt, what + ": state field " + std::to_string(st) + " is out of range");
  }

  // Maps an existing, ready segment (the caller holds its flock or received its fd).
  static void map_existing(Segment& s, const SegmentOptions& o) {
    const std::string what = label(s.name_);
    HeaderImage img;
    long fsize = sys::check(sys::file_size(s.fd_), what + ": fstat");
    if (fsize > 0) {
      ssize_t n = sys::pread(s.fd_, img.bytes.data(), img.bytes.size(), 0);
      sys::check(n, what + ": read header");
    }
    validate(img.h(), fsize, what, s.fd_);
    if (img.h().state.load(std::memory_order_acquire) != static_cast<std::uint32_t>(SegmentState::ready))
      throw Error(Errc::owner_dead, what + ": its creator (pid " + std::to_string(img.h().creator.pid) +
                                        ") died while initialising it; remove it or use open_or_create");
    std::uintptr_t base = img.h().base;
    std::size_t cap = img.h().capacity;
    detail::MappingKey key = file_key(s.fd_, what);
    // Already mapped at home in this process? Then the length is the one mapped then, whatever
    // the header says now.
    s.map_ = detail::registry_find(key, base, &cap);
    if (s.map_ == nullptr) {
      s.map_ = map_fixed(s.fd_, base, cap, what);
      if (s.map_ != nullptr) detail::registry_add(key, s.map_, cap);
    }
    if (s.map_ == nullptr) {
      if (o.relocate == Relocate::forbidden)
        throw Error(Errc::address_in_use, what + ": its base " + hex(base) + " is taken in this process by " +
                                              occupant(base, base + cap) +
                                              "; open it with Relocate::allowed to map it elsewhere");
      s.map_ = map_anywhere(s.fd_, cap, what);
      log().info("{}: base {} taken; relocated to {}", what, hex(base), static_cast<void*>(s.map_));
    }
    s.capacity_ = cap;
    s.home_ = base;
    // Re-validate what we mapped (another process may have grown it since the pread: fine), and
    // check that its geometry is the one we mapped: base and capacity never change after
    // creation, so a difference means another process rewrote them, and nothing this process
    // computes may depend on the rewritten values (pointer_at, close's munmap use capacity_).
    if (fsize < static_cast<long>(header_end())) fsize = sys::check(sys::file_size(s.fd_), what + ": fstat");
    if (fsize < static_cast<long>(header_end()))
      throw Error(Errc::corrupt, what + ": truncated to " + std::to_string(fsize) + " bytes while being opened");
    validate(s.header(), fsize, what, s.fd_);
    if (s.header().capacity != s.capacity_ || s.header().base != s.home_)
      throw Error(Errc::corrupt, what + ": header says capacity " + std::to_string(s.header().capacity) + " at " +
                                     hex(s.header().base) + ", but this process mapped it with capacity " +
                                     std::to_string(s.capacity_) + " at " + hex(s.home_) +
                                     ": another process rewrote the header");
    hold_mapped_lock(s, what);
    log().debug("opened {} at {} (home {})", what, static_cast<void*>(s.map_), hex(base));
  }

  // Every Segment holds the mapped lock while it maps its file (file_users.hpp).
  static void hold_mapped_lock(Segment& s, const std::string& what) {
    int r = detail::hold_mapped_lock(s.fd_);
    if (r == -EAGAIN)
      throw Error(Errc::corrupt, what + ": another process holds a write lock on its in-use byte (no shmkit code does)",
                  EAGAIN);
    sys::check(r, what + ": lock the in-use byte");
  }

  static void attach(Segment& s) {
    SegmentHeader& h = s.header();
    sys::ProcessIdentity me = sys::this_process();
    AdminGuard g(h);
    g.require(label(s.name_) + ": attach");
    int free_slot = -1;
    for (std::size_t i = 0; i < SegmentHeader::kAttachSlots; ++i) {
      auto& e = h.attach[i];
      std::int32_t pid = e.pid.load(std::memory_order_relaxed);  // relaxed: admin lock held
      if (pid == 0) {
        if (free_slot < 0) free_slot = static_cast<int>(i);
        continue;
      }
      sys::ProcessIdentity id{pid, 0, e.start_time.load(std::memory_order_relaxed)};
      if (sys::liveness(id) == sys::Liveness::dead) {
        // A process that died attached: its entry is reused (stale clean-up).
        log().debug("{}: attach slot {} held by dead pid {}: reclaimed", label(s.name_), i, pid);
        e.pid.store(0, std::memory_order_relaxed);
        if (free_slot < 0) free_slot = static_cast<int>(i);
      }
    }
    if (free_slot < 0) {
      log().warn("{}: attach table full ({} live processes); pid {} is not recorded", label(s.name_),
                 SegmentHeader::kAttachSlots, me.pid);
      return;
    }
    auto& e = h.attach[free_slot];
    // start_time first, then pid with release: a lock-free reader (shmkit ls) that sees the pid
    // sees its start time (INVARIANT5).
    e.start_time.store(me.start_time, std::memory_order_relaxed);
    e.pid.store(me.pid, std::memory_order_release);
    s.attach_slot_ = free_slot;
  }

  // Takes the file's flock, polling so the wait is bounded by the deadline.
  static void flock_until(int fd, sys::Deadline deadline, const std::string& what) {
    for (;;) {
      int r = sys::flock(fd, LOCK_EX | LOCK_NB);
      if (r == 0) return;
      if (r != -EWOULDBLOCK) sys::check(r, what + ": flock");
      if (sys::Clock::now() >= deadline)
        throw Error(Errc::timed_out, what + ": timed out waiting for the process that is initialising it");
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  }

  static Segment open_named(std::string_view name_in, Mode mode, std::size_t size, const SegmentOptions& o) {
    require_valid_name(name_in);
    Segment s;
    s.name_ = std::string(name_in);
    const std::string what = label(s.name_);
    const auto deadline = sys::Clock::now() + o.open_timeout;
    for (;;) {
      int fd = -ENOENT;
      bool created = false;
      if (mode != Mode::open) {
        fd = sys::shm_open(s.name_.c_str(), O_RDWR | O_CREAT | O_EXCL, o.mode);
        if (fd >= 0) {
          created = true;
          // shm_open applies the umask; the requested mode is the mode.
          sys::check(sys::fchmod(fd, o.mode), what + ": fchmod");
        } else if (fd != -EEXIST || mode == Mode::create) {
          sys::check(fd, what + ": create");
        }
      }
      if (fd < 0) {
        fd = sys::shm_open(s.name_.c_str(), O_RDWR, 0);
        if (fd == -ENOENT && mode == Mode::open_or_create) continue;  // removed meanwhile: race again
        if (fd == -ENOENT) throw Error(Errc::not_found, what + ": no such segment (/dev/shm" + s.name_ + ")", ENOENT);
        sys::check(fd, what + ": open");
      }
      s.fd_ = fd;
      check_owner(fd, o, what);
      flock_until(fd, deadline, what);
      // Under the flock: nobody else is initialising, and nobody removes the name by
      // remove_if_unused(). If that removal came first, this file is no longer NAME: start again.
      struct ::stat st;
      sys::check(sys::fstat(fd, &st), what + ": fstat");
      if (st.st_nlink == 0) {
        s.fd_ = -1;
        (void)sys::close(fd);
        continue;
      }
      // Decide whether the file needs initialising.
      long fsize = st.st_size;
      bool needs_init = false, headerless = false;
      if (fsize == 0) {
        needs_init = true;  // a creator between create and flock, or one that died there
      } else if (fsize >= static_cast<long>(sizeof(SegmentHeader))) {
        HeaderImage img;
        sys::check(sys::pread(fd, img.bytes.data(), img.bytes.size(), 0), what + ": read header");
        headerless = img.blank() && zero_filled_segment_file(fd, fsize);
        needs_init = headerless || (img.h().magic == SegmentHeader::kMagic &&
                                    img.h().state.load(std::memory_order_acquire) ==
                                        static_cast<std::uint32_t>(SegmentState::initialising));
      }
      if (needs_init && mode == Mode::open) {
        if (fsize == 0 && sys::Clock::now() < deadline) {
          // Perhaps the creator has not reached its flock yet: let go and look again shortly.
          (void)sys::flock(fd, LOCK_UN);
          s.fd_ = -1;
          (void)sys::close(fd);
          std::this_thread::sleep_for(std::chrono::milliseconds(2));
          continue;
        }
        throw Error(fsize == 0 ? Errc::not_a_segment : Errc::owner_dead,
                    what + (fsize == 0    ? ": empty file: not a shmkit segment, or its creator died before initialising it"
                            : headerless ? ": zero-filled with no header: its creator died after sizing it; remove it or "
                                           "use open_or_create"
                                         : ": its creator died while initialising it; remove it or use open_or_create"));
      }
      if (needs_init) {
        if (!created) log().info("{}: initialising a segment its creator left uninitialised", what);
        try {
          initialise(s, size, o, s.name_);
        } catch (...) {
          // Leave no half-made file behind for a segment this call created.
          if (created) (void)sys::shm_unlink(s.name_.c_str());
          throw;
        }
      } else {
        if (mode == Mode::create && created)  // cannot happen: a new file is empty
          throw Error(Errc::corrupt, what + ": newly created file was not empty");
        map_existing(s, o);
      }
      if (o.attach) attach(s);
      (void)sys::flock(fd, LOCK_UN);
      return s;
    }
  }
};

std::string Segment::check_name(std::string_view name) {
  if (name.size() < 2 || name[0] != '/') return "a segment name is '/' followed by at least one character";
  if (name.size() > 251) return "longer than 251 characters";
  for (std::size_t i = 1; i < name.size(); ++i) {
    if (name[i] == '/') return "only the leading character may be '/'";
    if (name[i] == '\0') return "contains a NUL character";
  }
  if (name == "/." || name == "/..") return "'.' and '..' are not names";
  return {};
}

Segment Segment::create(std::string_view name, std::size_t size, const SegmentOptions& opts) {
  return Raw::open_named(name, Mode::create, size, opts);
}
Segment Segment::open(std::string_view name, const SegmentOptions& opts) {
  return Raw::open_named(name, Mode::open, 0, opts);
}
Segment Segment::open_or_create(std::string_view name, std::size_t size, const SegmentOptions& opts) {
  return Raw::open_named(name, Mode::open_or_create, size, opts);
}

Segment Segment::create_anonymous(std::size_t size, const SegmentOptions& opts) {
  Segment s;
  s.fd_ = static_cast<int>(
      sys::check(sys::memfd_create("shmkit", MFD_CLOEXEC | MFD_ALLOW_SEALING), "anonymous segment: memfd_create"));
  static std::atomic<unsigned> counter{0};
  // Relaxed: only uniqueness of the key matters.
  std::string key = "anon:" + std::to_string(::getpid()) + ":" +
                    std::to_string(counter.fetch_add(1, std::memory_order_relaxed));
  Raw::initialise(s, size, opts, key);
  // No process that holds this fd (children, receivers of send_to) can shrink the file under the
  // others' mappings: a memfd is the one kind of segment file the kernel lets us seal. Growth
  // (fallocate) stays allowed.
  sys::check(sys::add_seals(s.fd_, F_SEAL_SHRINK), "anonymous segment: seal against shrinking");
  if (opts.attach) Raw::attach(s);
  return s;
}

Segment Segment::adopt(int fd, const SegmentOptions& opts) {
  Segment s;
  s.fd_ = fd;
  check_owner(fd, opts, "adopted segment");
  Raw::map_existing(s, opts);
  if (opts.attach) Raw::attach(s);
  return s;
}

namespace {
// Opens /dev/shm/NAME read-only for in_use()/remove_if_unused() (its own open file description,
// so the query sees every Segment's mapped lock, this process's included).
int open_for_query(const std::string& n) {
  int fd = sys::shm_open(n.c_str(), O_RDONLY, 0);
  if (fd == -ENOENT) throw Error(Errc::not_found, "segment " + n + ": no such segment", ENOENT);
  return static_cast<int>(sys::check(fd, "segment " + n + ": open"));
}

// The in-use decision, made while holding the file's flock in `mode` (LOCK_SH to look, LOCK_EX
// to remove): a flock held elsewhere means a process is creating or opening it right now.
// Calls `then` (under the flock) when nobody uses the file. Returns whether it was unused.
template <class F>
bool when_unused(int fd, int mode, F then) {
  int r = sys::flock(fd, mode | LOCK_NB);
  if (r == -EWOULDBLOCK) return false;
  if (r < 0) return false;  // cannot tell: in use, as removal must err on keeping the file
  bool unused = !detail::file_in_use(fd);
  if (unused) then();
  (void)sys::flock(fd, LOCK_UN);
  return unused;
}
}  // namespace

bool Segment::in_use(std::string_view name) {
  require_valid_name(name);
  std::string n(name);
  int fd = open_for_query(n);
  bool unused = when_unused(fd, LOCK_SH, [] {});
  (void)sys::close(fd);
  return !unused;
}

bool Segment::remove_if_unused(std::string_view name) {
  require_valid_name(name);
  std::string n(name);
  int fd = open_for_query(n);
  int unlinked = 0;
  bool unused = when_unused(fd, LOCK_EX, [&] {
    // Still NAME? (another remover may have been first, and NAME be a new file by now)
    int now_fd = sys::shm_open(n.c_str(), O_RDONLY, 0);
    struct ::stat mine, now;
    if (now_fd >= 0 && sys::fstat(fd, &mine) == 0 && sys::fstat(now_fd, &now) == 0 && mine.st_ino == now.st_ino &&
        mine.st_dev == now.st_dev)
      unlinked = sys::shm_unlink(n.c_str()) == 0 ? 1 : -1;
    if (now_fd >= 0) (void)sys::close(now_fd);
  });
  (void)sys::close(fd);
  if (unused && unlinked == 1) log().info("removed unused segment {}", n);
  return unused && unlinked == 1;
}

Segment::FileKind Segment::inspect_file(int fd) {
  long fsize = sys::check(sys::file_size(fd), "inspect segment file: fstat");
  if (fsize == 0) return FileKind::empty;
  HeaderImage img;
  ssize_t n = sys::check(sys::pread(fd, img.bytes.data(), img.bytes.size(), 0), "inspect segment file: read");
  if (n >= static_cast<ssize_t>(sizeof(std::uint64_t)) && img.h().magic == SegmentHeader::kMagic)
    return FileKind::segment;
  if (n == static_cast<ssize_t>(img.bytes.size()) && img.blank() && zero_filled_segment_file(fd, fsize))
    return FileKind::incomplete;
  return FileKind::other;
}

void Segment::remove(std::string_view name) {
  require_valid_name(name);
  std::string n(name);
  int r = sys::shm_unlink(n.c_str());
  if (r == -ENOENT) throw Error(Errc::not_found, "segment " + n + ": no such segment", ENOENT);
  sys::check(r, "segment " + n + ": unlink");
  log().info("removed segment {}", n);
}

Segment::Segment(Segment&& o) noexcept
    : map_(o.map_),
      capacity_(o.capacity_),
      home_(o.home_),
      fd_(o.fd_),
      name_(std::move(o.name_)),
      attach_slot_(o.attach_slot_) {
  o.map_ = nullptr;
  o.fd_ = -1;
  o.attach_slot_ = -1;
}

Segment& Segment::operator=(Segment&& o) noexcept {
  if (this != &o) {
    close();
    map_ = o.map_;
    capacity_ = o.capacity_;
    home_ = o.home_;
    fd_ = o.fd_;
    name_ = std::move(o.name_);
    attach_slot_ = o.attach_slot_;
    o.map_ = nullptr;
    o.fd_ = -1;
    o.attach_slot_ = -1;
  }
  return *this;
}

Segment::~Segment() { close(); }

void Segment::close() noexcept {
  if (map_ != nullptr && attach_slot_ >= 0) {
    // The header is touched only while the file still backs it: another process may have cut the
    // file short (ftruncate), and a page past the end of the file raises SIGBUS. (The check and
    // the access are not atomic: README "Guarantees" states what remains.)
    long fsize = sys::file_size(fd_);
    if (fsize < static_cast<long>(header_end())) {
      log().warn("{}: the file was cut to {} bytes by another process; not detaching", Raw::label(name_), fsize);
    } else {
      // Only the process that attached clears its entry (a forked child shares the object but is
      // not that process).
      auto& e = header().attach[attach_slot_];
      sys::ProcessIdentity me = sys::this_process();
      AdminGuard g(header());
      if (!g.held()) {
        log().warn("{}: detach skipped: the admin lock is not recoverable", Raw::label(name_));
      } else if (e.pid.load(std::memory_order_relaxed) == me.pid &&  // relaxed: admin lock held
                 e.start_time.load(std::memory_order_relaxed) == me.start_time) {
        e.pid.store(0, std::memory_order_release);  // pairs with attached()/ls readers' acquire
      }
    }
  }
  attach_slot_ = -1;
  if (map_ != nullptr) {
    std::vector<detail::Hook> hooks;
    if (detail::registry_release(map_, hooks)) {
      // Last Segment object of this mapping in this process: let modules drop their per-process
      // state about it (newest first) while the memory is still mapped.
      for (auto it = hooks.rbegin(); it != hooks.rend(); ++it) it->fn(map_, it->ctx);
      (void)sys::munmap(map_, capacity_);
    }
    map_ = nullptr;
  }
  if (fd_ >= 0) {
    (void)sys::close(fd_);
    fd_ = -1;
  }
}

std::size_t Segment::size() const noexcept { return mapped_size(map_, capacity_); }

std::size_t Segment::mapped_size(const std::byte* map, std::size_t capacity) noexcept {
  // Acquire: pairs with the release store in try_grow, after the file was extended (INVARIANT6).
  // Clamped to the mapping: a header damaged after open must not make pointer_at() hand out
  // addresses past what this process mapped.
  if (map == nullptr) return 0;
  std::uint64_t s = reinterpret_cast<const SegmentHeader*>(map)->size.load(std::memory_order_acquire);
  return s <= capacity ? s : capacity;
}

void Segment::add_close_hook(CloseHook fn, void* ctx) const {
  detail::registry_add_hook(map_, {fn, ctx});
}
void Segment::remove_close_hook(void* ctx) const noexcept { detail::registry_remove_hook(map_, ctx); }

int Segment::try_grow(std::size_t new_size) noexcept {
  int rc = try_grow_mapping(map_, capacity_, fd_, new_size);
  if (rc == 0) log().debug("{}: grown to at least {} bytes", Raw::label(name_), new_size);
  return rc;
}

int Segment::try_grow_mapping(std::byte* map, std::size_t capacity, int fd, std::size_t new_size) noexcept {
  if (map == nullptr) return -EBADF;
  new_size = round_up(new_size, sys::page_size());
  if (new_size <= mapped_size(map, capacity)) return 0;
  if (new_size > capacity) return -ENOMEM;
  SegmentHeader& h = *reinterpret_cast<SegmentHeader*>(map);
  int rc = 0;
  {
    // A holder that died here leaves file size >= size (INVARIANT6): the guard's repair suffices.
    AdminGuard g(h);
    if (!g.held()) return -ENOTRECOVERABLE;
    std::uint64_t cur = h.size.load(std::memory_order_relaxed);  // relaxed: admin lock held
    if (new_size > cur) {
      rc = sys::fallocate(fd, static_cast<off_t>(cur), static_cast<off_t>(new_size - cur));
      if (rc == 0) h.size.store(new_size, std::memory_order_release);  // pairs with size()'s acquire
    }
  }
  return rc;
}

void Segment::grow(std::size_t new_size) {
  int r = try_grow(new_size);
  if (r == -ENOMEM)
    throw Error(Errc::out_of_memory, Raw::label(name_) + ": cannot grow to " + std::to_string(new_size) +
                                         " bytes: capacity is " + std::to_string(capacity_), ENOMEM);
  if (r == -ENOSPC)
    throw Error(Errc::out_of_memory, Raw::label(name_) + ": cannot grow to " + std::to_string(new_size) +
                                         " bytes: /dev/shm is full", ENOSPC);
  sys::check(r, Raw::label(name_) + ": grow");
}

std::vector<AttachedProcess> Segment::attached() const {
  std::vector<AttachedProcess> out;
  if (map_ == nullptr) return out;
  // Read through the descriptor: past the end of a file another process cut short, pread returns
  // fewer bytes where the mapping would raise SIGBUS. The kernel's copy gives no ordering between
  // an entry's two words, so an entry being written at this moment may read with a stale
  // start_time (and show as dead) in this one snapshot; attach() itself works under the lock.
  std::array<AttachEntry, SegmentHeader::kAttachSlots> table;
  ssize_t n = sys::pread(fd_, table.data(), sizeof table, static_cast<off_t>(offsetof(SegmentHeader, attach)));
  if (n < 0) {
    log().warn("{}: cannot read the attach table: {}", Raw::label(name_), std::strerror(static_cast<int>(-n)));
    return out;
  }
  for (std::size_t i = 0; i < static_cast<std::size_t>(n) / sizeof(AttachEntry); ++i) {
    std::int32_t pid = table[i].pid.load(std::memory_order_relaxed);  // a private copy
    if (pid == 0) continue;
    sys::ProcessIdentity id{pid, 0, table[i].start_time.load(std::memory_order_relaxed)};
    out.push_back({id, sys::liveness(id)});
  }
  return out;
}

void Segment::send_to(int unix_socket) const {
  sys::check(sys::send_fd(unix_socket, fd_), Raw::label(name_) + ": send fd");
}

Segment Segment::receive_from(int unix_socket, const SegmentOptions& opts) {
  int fd = static_cast<int>(sys::check(sys::recv_fd(unix_socket), "receive segment fd"));
  return adopt(fd, opts);  // adopt owns fd, also when it throws
}

}  // namespace shmkit
