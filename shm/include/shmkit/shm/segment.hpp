/// Segment: one shared mapping that several processes attach to, placed at the same fixed address
/// in every process so raw pointers into it mean the same thing everywhere.
///
/// Lifecycle
///  * create(name, size)          — a new file /dev/shm/NAME (O_EXCL); fails if it exists.
///  * open(name)                  — an existing segment; waits (bounded by open_timeout) for a
///                                  creator that is still initialising it.
///  * open_or_create(name, size)  — race-free: of many racing processes exactly one initialises
///                                  and the others wait for it (serialised by flock on the file).
///  * create_anonymous(size)      — a memfd, for fork-based use (children inherit the mapping).
///                                  Sealed against shrinking (F_SEAL_SHRINK): no process holding
///                                  its fd can cut it under the others' mappings.
///  * adopt(fd)                   — a segment fd received from another process (receive_fd()).
///  Every way in that opens an existing file (open, open_or_create, adopt, receive_from) refuses a
///  file owned by another user unless SegmentOptions::allow_other_owner.
///  A creator writes the header (state `initialising`) before it sizes the file, so one that dies
///  while initialising leaves an empty file or a header in state `initialising`, and releases its
///  flock; a file from an older creator may also be left zero-filled with no header at all
///  (inspect_file() says `incomplete`). open() then fails with Errc::owner_dead within
///  open_timeout; open_or_create() initialises the segment again (nobody can have used it).
///
/// Who uses it. A Segment holds a lock on its file (see in_use()) for as long as it maps it; the
/// lock is shared with forked children through the inherited descriptor. remove_if_unused() is
/// the removal that never takes a segment from under a live process.
///
/// Fixed address. The creator picks the base (SegmentOptions::base, or by default a slot derived
/// from the name in [kBaseWindowLow, kBaseWindowHigh), a window programs leave empty), maps with
/// MAP_FIXED_NOREPLACE and records it in the header. An opener whose range is taken gets
/// Errc::address_in_use naming the occupant (from /proc/self/maps), or with
/// Relocate::allowed a mapping elsewhere, reported by at_home() == false. shmkit's own structures
/// store offsets only, so they work in a relocated mapping; user raw pointers do not.
///
/// Growth without remapping. The whole capacity is reserved and the file is mapped across it at
/// once; size() bytes are backed. grow() extends (fallocate) the file under the admin lock and
/// publishes the new size; every attached process sees the new bytes at once. Bytes past size()
/// must not be touched (SIGBUS): shmkit checks against size() before every access.
///
/// Thread safety: a Segment object may be used from several threads; grow() and the attach table
/// are serialised by the admin lock in the header.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "shmkit/shm/segment_header.hpp"
#include "shmkit/sys/process.hpp"

#if defined(__SANITIZE_THREAD__)
#define SHMKIT_TSAN_BASE_WINDOW 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define SHMKIT_TSAN_BASE_WINDOW 1
#endif
#endif

namespace shmkit {

class Lock;

enum class Relocate { forbidden, allowed };

struct SegmentOptions {
  std::size_t capacity = 0;          // 0: kDefaultCapacity (or size, if larger)
  std::uintptr_t base = 0;           // 0: derived from the name (anonymous: first free slot)
  mode_t mode = 0600;                // file mode for create
  Relocate relocate = Relocate::forbidden;
  std::chrono::milliseconds open_timeout{5000};  // bound on waiting for an initialising creator
  bool attach = true;               // record this process in the attach table (tools pass false)
  bool allow_other_owner = false;   // open/adopt a segment file owned by another user
};

struct AttachedProcess {
  sys::ProcessIdentity id;
  sys::Liveness liveness;
};

class Segment {
 public:
  static constexpr std::size_t kDefaultCapacity = std::size_t{16} << 30;   // 16 GiB reserved
  static constexpr std::size_t kMaxCapacity = std::size_t{1} << 40;        // 1 TiB
#if defined(SHMKIT_TSAN_BASE_WINDOW)
  // ThreadSanitizer reserves 0x1000'0000'0000-0x5500'0000'0000 for its shadow and metadata, so a
  // TSan build places segments in the low application range it leaves to programs (7 slots of
  // 64 GiB: enough for tests, not for production).
  static constexpr std::uintptr_t kBaseWindowLow = 0x001000000000;         // 64 GiB
  static constexpr std::uintptr_t kBaseWindowHigh = 0x008000000000;        // 512 GiB
#else
  static constexpr std::uintptr_t kBaseWindowLow = 0x200000000000;         // 32 TiB
  static constexpr std::uintptr_t kBaseWindowHigh = 0x400000000000;        // 64 TiB
#endif

  static Segment create(std::string_view name, std::size_t size, const SegmentOptions& opts = {});
  static Segment open(std::string_view name, const SegmentOptions& opts = {});
  static Segment open_or_create(std::string_view name, std::size_t size, const SegmentOptions& opts = {});
  static Segment create_anonymous(std::size_t size, const SegmentOptions& opts = {});
  /// Takes ownership of `fd` (a segment's file descriptor), also when it throws.
  static Segment adopt(int fd, const SegmentOptions& opts = {});
  /// Unlinks /dev/shm/NAME; attached processes keep their mappings. Throws not_found if absent.
  static void remove(std::string_view name);
  /// true while any live process maps /dev/shm/NAME (through a Segment, also one inherited by
  /// fork; or any mapping of the file that /proc lets this process see) or is initialising it.
  /// Throws not_found if absent.
  static bool in_use(std::string_view name);
  /// Unlinks /dev/shm/NAME unless in_use(); returns whether it did. Decided under the file's
  /// creation flock, so an opener racing with it either keeps the file in use or opens afresh.
  static bool remove_if_unused(std::string_view name);
  /// What an open /dev/shm file holds, judged from its bytes (pread; nothing is mapped).
  enum class FileKind {
    segment,     // starts with shmkit's magic (open() validates the rest)
    incomplete,  // zero-filled, page-sized: a creator died after sizing it, before the header
    empty,       // 0 bytes (a creator between creating and sizing it, or not shmkit's)
    other,       // anything else: not shmkit's
  };
  static FileKind inspect_file(int fd);
  /// Checks a user-supplied name: "/" followed by 1..250 characters, none of them '/' or NUL.
  /// Returns an empty string when valid, else the reason.
  static std::string check_name(std::string_view name);

  Segment() = default;
  Segment(Segment&& o) noexcept;
  Segment& operator=(Segment&& o) noexcept;
  Segment(const Segment&) = delete;
  Segment& operator=(const Segment&) = delete;
  ~Segment();
  /// Detaches (clears this process's attach-table entry), unmaps, closes the fd. Idempotent.
  void close() noexcept;
  bool valid() const noexcept { return map_ != nullptr; }

  /// -- where it is --
  std::byte* base() const noexcept { return map_; }              // in this process
  std::uintptr_t home() const noexcept { return home_; }         // recorded in the header at open
  bool at_home() const noexcept { return reinterpret_cast<std::uintptr_t>(map_) == home(); }
  std::size_t size() const noexcept;                             // bytes backed now
  std::size_t capacity() const noexcept { return capacity_; }    // bytes reserved
  int fd() const noexcept { return fd_; }
  const std::string& name() const noexcept { return name_; }     // "" for anonymous/adopted
  SegmentHeader& header() const noexcept { return *reinterpret_cast<SegmentHeader*>(map_); }

  /// Process-local hooks, run when this process's last Segment object for this mapping closes,
  /// before the unmap: a module that keeps per-process state about the mapping (the heap's thread
  /// caches) releases it there, so closing a segment before process exit is always safe.
  using CloseHook = void (*)(std::byte* map_base, void* ctx);
  void add_close_hook(CloseHook fn, void* ctx) const;
  void remove_close_hook(void* ctx) const noexcept;

  /// -- growth --
  /// Extends the backed size to at least new_size (rounded up to pages). Throws out_of_memory
  /// past capacity or when the file system is full.
  void grow(std::size_t new_size);
  /// Hot-path form: 0, -ENOMEM past capacity, -ENOSPC when /dev/shm is full.
  [[nodiscard]] int try_grow(std::size_t new_size) noexcept;
  /// size() and try_grow() for a module that keeps a mapping rather than a Segment object (which
  /// may be moved): `map` and `capacity` are a mapping's base() and capacity(), `fd` any
  /// descriptor of its file (for example a dup of fd()). The heap grows its segment this way.
  static std::size_t mapped_size(const std::byte* map, std::size_t capacity) noexcept;
  [[nodiscard]] static int try_grow_mapping(std::byte* map, std::size_t capacity, int fd, std::size_t new_size) noexcept;

  /// -- relative/absolute translation --
  bool contains(const void* p, std::size_t len = 1) const noexcept {
    auto a = reinterpret_cast<std::uintptr_t>(p), b = reinterpret_cast<std::uintptr_t>(map_);
    return a >= b && len <= size() && a - b <= size() - len;
  }
  /// Precondition: contains(p).
  std::uint64_t offset_of(const void* p) const noexcept {
    return reinterpret_cast<std::uintptr_t>(p) - reinterpret_cast<std::uintptr_t>(map_);
  }
  /// nullptr when [off, off+len) is not inside size().
  void* pointer_at(std::uint64_t off, std::size_t len = 1) const noexcept {
    return len <= size() && off <= size() - len ? map_ + off : nullptr;
  }
  template <class T>
  T* at(std::uint64_t off) const noexcept { return static_cast<T*>(pointer_at(off, sizeof(T))); }
  /// Translates a pointer valid at home() (for example one found in user data) into this mapping.
  void* from_home(std::uintptr_t home_address) const noexcept {
    return home_address >= home() ? pointer_at(home_address - home()) : nullptr;
  }

  /// -- processes --
  /// The attach table, read through the file descriptor (never through the mapping, so a file
  /// cut short by another process gives a short table, not SIGBUS). A snapshot.
  std::vector<AttachedProcess> attached() const;

  /// -- fd passing (SCM_RIGHTS over a unix socket) --
  void send_to(int unix_socket) const;     // sends fd()
  static Segment receive_from(int unix_socket, const SegmentOptions& opts = {});

 private:
  std::byte* map_ = nullptr;
  std::size_t capacity_ = 0;   // the length this process mapped (never re-read from the header)
  std::uintptr_t home_ = 0;    // the header's base as validated when this process mapped it
  int fd_ = -1;
  std::string name_;
  int attach_slot_ = -1;

  struct Raw;  // implementation helpers (segment.cpp)
  friend struct Raw;
};

}  // namespace shmkit
