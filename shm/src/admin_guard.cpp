#include "shmkit/shm/admin_guard.hpp"

#include "shmkit/shm/segment.hpp"
#include "shmkit/sys/error.hpp"
#include "shmkit/sys/log.hpp"
#include "shmkit/sys/process.hpp"

namespace shmkit {

namespace {
// The repair after a dead admin-lock owner (see the file comment of admin_guard.hpp): an attach
// entry whose process is not alive is freed (INVARIANT5). Relaxed: the lock is held.
void repair_attach_table(SegmentHeader& h) noexcept {
  log().warn("segment admin lock: previous owner died; checking the attach table");
  for (auto& e : h.attach) {
    sys::ProcessIdentity id{e.pid.load(std::memory_order_relaxed), 0,
                            e.start_time.load(std::memory_order_relaxed)};
    if (id.pid != 0 && sys::liveness(id) != sys::Liveness::alive) e.pid.store(0, std::memory_order_relaxed);
  }
}
}  // namespace

AdminGuard::AdminGuard(SegmentHeader& header) noexcept : header_(header) {
  LockResult r = header_.admin_lock.acquire();
  if (r == LockResult::owner_died) {
    repair_attach_table(header_);
    header_.admin_lock.mark_consistent();
  }
  held_ = r == LockResult::acquired || r == LockResult::owner_died;
}

AdminGuard::AdminGuard(const Segment& segment) noexcept : AdminGuard(segment.header()) {}

AdminGuard::~AdminGuard() {
  if (held_) header_.admin_lock.unlock();
}

void AdminGuard::require(const std::string& what) const {
  if (!held_)
    throw Error(Errc::not_recoverable, what + ": the segment's admin lock is not recoverable (a holder died and "
                                              "its repair was never completed)");
}

}  // namespace shmkit
