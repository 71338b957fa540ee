/// The header at offset 0 of every segment. Layout version kLayoutVersion; any change to this file
/// that moves a field bumps it.
///
///   offset 0            SegmentHeader (magic, version, geometry, state, roots, admin lock, attach table)
///   kDataOffset         first byte for modules (the heap places its control block here)
///   size                end of the backed bytes (grows, under admin_lock, up to capacity)
///   capacity            end of the reserved, mapped address range
///
/// Invariants (checked by validate(); an opener refuses a segment that fails them):
///   INVARIANT1  magic == kMagic && version == kLayoutVersion && header_size == sizeof(SegmentHeader)
///   INVARIANT2  kDataOffset < size <= capacity <= Segment::kMaxCapacity, all multiples of the page
///   INVARIANT3  base % page == 0 and [base, base+capacity) lies in the user half of the address space
///   INVARIANT4  state == ready for every segment an opener maps (initialising only while a creator
///               holds the file's flock; a dead creator leaves initialising and no flock — the
///               creator writes this header, state initialising, before it sizes the file)
///   INVARIANT5  an attach entry is free iff pid == 0; a used entry names one process by
///               (pid, start_time); entries change only under admin_lock.
///   INVARIANT6  file size >= size (growth extends the file first, then publishes size)
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "shmkit/locks/lock.hpp"
#include "shmkit/sys/process.hpp"

namespace shmkit {

enum class SegmentState : std::uint32_t { empty = 0, initialising = 1, ready = 2 };

struct AttachEntry {
  std::atomic<std::int32_t> pid;     // 0 = free (INVARIANT5)
  std::uint32_t reserved;
  std::atomic<std::uint64_t> start_time;
};
static_assert(sizeof(AttachEntry) == 16);

/// Root slots: offsets (from the segment base) of the modules' root structures; 0 = none yet.
enum class RootSlot : unsigned { heap = 0, directory = 1, user0 = 4, count = 8 };

struct SegmentHeader {
  static constexpr std::uint64_t kMagic = 0x01544b4d48530a53ULL;  // "S\nSHMKT\x01"
  static constexpr std::uint32_t kLayoutVersion = 1;
  static constexpr std::size_t kAttachSlots = 256;
  static constexpr std::size_t kDataOffset = 16384;

  std::uint64_t magic;
  std::uint32_t version;
  std::uint32_t header_size;
  std::atomic<std::uint32_t> state;  // SegmentState; futex-woken when it becomes ready
  std::uint32_t flags;
  std::uint64_t base;                // home address
  std::atomic<std::uint64_t> size;   // published with release after the file was extended
  std::uint64_t capacity;
  sys::ProcessIdentity creator;
  std::uint64_t created_unix_ns;
  std::atomic<std::uint64_t> roots[static_cast<unsigned>(RootSlot::count)];
  alignas(64) Lock admin_lock;
  alignas(64) AttachEntry attach[kAttachSlots];

  std::atomic<std::uint64_t>& root(RootSlot s) noexcept { return roots[static_cast<unsigned>(s)]; }
};

static_assert(std::is_standard_layout_v<SegmentHeader>, "the header is read by other processes");
// The layout of version kLayoutVersion, field by field: a change that moves or resizes a field
// fails here until kLayoutVersion is bumped and this block is rewritten for the new version
// (processes of different shmkit builds share segments; the version is how they notice).
static_assert(SegmentHeader::kLayoutVersion != 1 ||
                  (offsetof(SegmentHeader, magic) == 0 && offsetof(SegmentHeader, version) == 8 &&
                   offsetof(SegmentHeader, header_size) == 12 && offsetof(SegmentHeader, state) == 16 &&
                   offsetof(SegmentHeader, flags) == 20 && offsetof(SegmentHeader, base) == 24 &&
                   offsetof(SegmentHeader, size) == 32 && offsetof(SegmentHeader, capacity) == 40 &&
                   offsetof(SegmentHeader, creator) == 48 && offsetof(SegmentHeader, created_unix_ns) == 64 &&
                   offsetof(SegmentHeader, roots) == 72 && offsetof(SegmentHeader, admin_lock) == 192 &&
                   sizeof(Lock) == 40 && offsetof(SegmentHeader, attach) == 256 &&
                   sizeof(AttachEntry) == 16 && SegmentHeader::kAttachSlots == 256 &&
                   sizeof(SegmentHeader) == 4352 && SegmentHeader::kDataOffset == 16384 &&
                   static_cast<unsigned>(RootSlot::count) == 8),
              "SegmentHeader layout changed: bump kLayoutVersion and restate this block for the new layout");
static_assert(offsetof(AttachEntry, pid) == 0 && offsetof(AttachEntry, start_time) == 8);
static_assert(sizeof(SegmentHeader) <= SegmentHeader::kDataOffset, "header must fit before the data");
static_assert(std::atomic<std::uint64_t>::is_always_lock_free);
static_assert(std::atomic<std::int32_t>::is_always_lock_free);

}  // namespace shmkit
