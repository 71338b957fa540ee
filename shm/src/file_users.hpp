// Who uses a segment file: the one criterion behind Segment::in_use() and remove_if_unused()
// (and so `shmkit rm --stale`).
//
// A process uses a segment file while it maps it. The attach table cannot say so (forked children
// of an attached process map the segment without an entry of their own), so two facts the kernel
// keeps are asked instead:
//  * the mapped lock: every Segment holds an open-file-description read lock on byte
//    kMappedLockByte of its file for as long as it has the file mapped. The lock belongs to the
//    open file description, so children that inherit the descriptor share it, and it goes away
//    only when the last process holding that description closes it or dies;
//  * /proc/*/maps: a mapping of the file's (device, inode) by any process this process may
//    inspect (all of them for root), which also covers a child that closed its inherited
//    descriptors but kept the mapping.
// Either one makes the file "in use". Neither depends on pids, so pid reuse cannot fake either.
#pragma once

#include <sys/types.h>

namespace shmkit::detail {

// Far past any file size, so the lock never overlaps bytes anyone reads or writes.
inline constexpr off_t kMappedLockByte = off_t{1} << 62;

// Takes the mapped lock (shared) on `fd`'s open file description: 0 or -errno (-EAGAIN when a
// process holds a conflicting write lock, which no shmkit code ever takes).
[[nodiscard]] int hold_mapped_lock(int fd) noexcept;

// true when another open file description holds the mapped lock, or a live process maps the file
// (device, inode) of `fd`; a failed query counts as in use (removal must err on keeping the file).
bool file_in_use(int fd) noexcept;

}  // namespace shmkit::detail
