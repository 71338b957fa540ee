/// AdminGuard: the one way to hold a segment's admin lock (SegmentHeader::admin_lock), which
/// serialises growth, the attach table and the modules' first-time initialisation of their roots.
///
/// Owner-death repair is written once, here: when the previous holder died inside its critical
/// section the guard re-checks the attach table (an entry that names no live process is freed,
/// INVARIANT5 of segment_header.hpp) and marks the lock consistent. That is all the repair the
/// admin lock's users need, because each of them leaves its own state valid after every single
/// store:
///   - attach writes an entry start_time-then-pid and detach clears pid first (INVARIANT5);
///   - growth extends the file before it publishes the new size (INVARIANT6);
///   - a module that initialises a root publishes the root offset last (release), so a death
///     before that leaves root == 0 and the next holder initialises again.
#pragma once

#include <string>

#include "shmkit/locks/lock.hpp"
#include "shmkit/shm/segment_header.hpp"

namespace shmkit {

class Segment;

class AdminGuard {
 public:
  /// Blocks until the admin lock is held (repairing after a dead owner) or is found not
  /// recoverable, in which case held() is false. Never throws: hot paths (try_grow) use it too.
  explicit AdminGuard(SegmentHeader& header) noexcept;
  explicit AdminGuard(const Segment& segment) noexcept;
  ~AdminGuard();
  AdminGuard(const AdminGuard&) = delete;
  AdminGuard& operator=(const AdminGuard&) = delete;

  /// false only when the lock is not recoverable (a previous holder released it unrepaired).
  bool held() const noexcept { return held_; }
  /// Set-up paths: throws Errc::not_recoverable naming `what` unless held().
  void require(const std::string& what) const;

 private:
  SegmentHeader& header_;
  bool held_ = false;
};

}  // namespace shmkit
