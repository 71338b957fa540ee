#include "shmkit/transport/uring_ring.hpp"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <string>
#include <thread>

#include "shmkit/sys/error.hpp"

namespace shmkit::transport {
namespace {
constexpr std::uint32_t kNone = UINT32_MAX;
constexpr unsigned kReapBatch = 64;
// user_data of the ring's own cancel request at destruction: its slot index is out of range, so
// routing drops it (counted as stale) and it can never reach a mailbox.
constexpr std::uint64_t kCancelUserData = UINT64_MAX;
}  // namespace

// ---- UringMailbox --------------------------------------------------------------------------------

UringMailbox::~UringMailbox() {
  // The kernel may still write into the buffers of outstanding operations: wait for each.
  UringCompletion c;
  while (outstanding() != 0) {
    if (ring_.wait(*this, &c, -1) == -ENOMSG) break;
  }
}

std::size_t UringMailbox::outstanding() const noexcept {
  std::lock_guard lk(ring_.mu_);
  return outstanding_;
}

// ---- UringRing: set-up -------------------------------------------------------------------------

UringRing::UringRing(Options opts) {
  if (opts.sq_entries == 0 || opts.max_in_flight == 0) {
    throw Error(Errc::invalid_argument, "UringRing: sq_entries and max_in_flight must be > 0");
  }
  io_uring_params p;
  std::memset(&p, 0, sizeof p);
  if (opts.cq_entries != 0) {
    p.flags |= IORING_SETUP_CQSIZE;
    p.cq_entries = opts.cq_entries;
  }
  int r = sys::uring_queue_init(opts.sq_entries, &ring_, &p);
  if (r < 0) {
    const bool unavailable = r == -ENOSYS || r == -EPERM || r == -EACCES;
    throw Error(unavailable ? Errc::unsupported : errc_from_errno(-r),
                "UringRing: " + sys::uring_unavailable_reason(r), -r);
  }
  sq_entries_ = p.sq_entries;
  cq_entries_ = p.cq_entries;
  nodrop_ = (p.features & IORING_FEAT_NODROP) != 0;
  ext_arg_ = (p.features & IORING_FEAT_EXT_ARG) != 0;
  max_in_flight_ = nodrop_ ? opts.max_in_flight : std::min(opts.max_in_flight, cq_entries_);
  try {
    slots_.resize(opts.max_in_flight);
  } catch (...) {
    sys::uring_queue_exit(&ring_);
    throw;
  }
  for (std::uint32_t i = 0; i < slots_.size(); ++i) {
    slots_[i].next = i + 1 < slots_.size() ? i + 1 : kNone;
  }
  free_head_ = 0;
}

UringRing::~UringRing() {
  std::unique_lock lk(mu_);
  if (in_flight_ != 0 && !broken_) {
    // Ask the kernel to cancel whatever is still pending, then collect the completions (bounded:
    // an operation that cannot be cancelled is abandoned to io_uring_queue_exit).
    if (io_uring_sqe* sqe = sys::uring_get_sqe(&ring_)) {
      io_uring_prep_cancel64(sqe, 0, IORING_ASYNC_CANCEL_ANY);
      sqe->user_data = kCancelUserData;
      (void)sys::uring_submit(&ring_);
    }
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(1);
    while (in_flight_ != 0 && std::chrono::steady_clock::now() < deadline && !reaping_) {
      if (reap_locked() == 0) (void)sys::uring_wait_cqe(&ring_, 10);
    }
  }
  if (fixed_registered_) (void)sys::uring_unregister_buffers(&ring_);
  sys::uring_queue_exit(&ring_);
}

int UringRing::register_buffer(void* base, std::size_t len) noexcept {
  std::lock_guard lk(mu_);
  if (fixed_registered_) return -EBUSY;
  iovec iov{base, len};
  int r = sys::uring_register_buffers(&ring_, &iov, 1);
  if (r == 0) fixed_registered_ = true;
  return r;
}

UringRing::Stats UringRing::stats() const noexcept {
  std::lock_guard lk(mu_);
  return stats_;
}

void UringRing::inject_ebusy(unsigned n) noexcept {
  std::lock_guard lk(mu_);
  inject_ebusy_ = n;
}

// ---- submission --------------------------------------------------------------------------------

int UringRing::acquire_locked(std::unique_lock<std::mutex>& lk, UringMailbox& mb,
                              std::uint64_t token, io_uring_sqe** sqe,
                              std::uint32_t* slot) noexcept {
  if (broken_ != 0) return broken_;
  if (&mb.ring_ != this) return -EINVAL;
  if (in_flight_ >= max_in_flight_ || free_head_ == kNone) return -EAGAIN;
  io_uring_sqe* s = sys::uring_get_sqe(&ring_);
  if (s != nullptr) {
    ++stats_.direct;  // case 1
  }
  while (s == nullptr) {
    // Case 2: the SQ is full; flush it (flush_locked handles case 3, EBUSY) and take a slot.
    int r = flush_locked(lk);
    if (r < 0) return r;
    ++stats_.flushed_full;
    s = sys::uring_get_sqe(&ring_);
  }
  // The lock may have been dropped while flushing (case 3 waits): re-check the record supply.
  if (free_head_ == kNone) {
    // Leave the SQE harmless: a NOP whose completion is dropped as stale.
    io_uring_prep_nop(s);
    s->user_data = kCancelUserData;
    return -EAGAIN;
  }
  const std::uint32_t i = free_head_;
  Slot& sl = slots_[i];
  free_head_ = sl.next;
  sl.mb = &mb;
  sl.token = token;
  sl.next = kNone;
  sl.state = SlotState::in_flight;
  ++in_flight_;
  ++mb.outstanding_;
  *sqe = s;
  *slot = i;
  return 0;
}

int UringRing::finish_locked(std::unique_lock<std::mutex>& lk, io_uring_sqe* sqe,
                             std::uint32_t slot, bool flush) noexcept {
  sqe->user_data = user_data(slot, slots_[slot].gen);
  if (!flush) return 0;
  int r = flush_locked(lk);
  if (r < 0) {
    // The SQE is in the ring and may yet be submitted; the ring cannot be trusted any more.
    broken_ = r;
    fail_all_locked(r);
  }
  return 0;  // the operation is accounted for: its mailbox receives its completion either way
}

int UringRing::flush() noexcept {
  std::unique_lock lk(mu_);
  return flush_locked(lk);
}

int UringRing::enter_locked() noexcept {
  if (inject_ebusy_ > 0) {
    --inject_ebusy_;
    return -EBUSY;
  }
  return sys::uring_submit(&ring_);
}

int UringRing::flush_locked(std::unique_lock<std::mutex>& lk) noexcept {
  // io_uring_sq_ready: SQEs filled (by us) and not yet consumed by the kernel.
  for (int attempts = 0; io_uring_sq_ready(&ring_) > 0; ++attempts) {
    if (broken_ != 0) return broken_;
    int r = enter_locked();
    if (r > 0) continue;
    if (r == -EBUSY || r == -EAGAIN || r == 0) {
      // Case 3 (EBUSY; EAGAIN is the kernel short of request memory, also cured by reaping).
      if (attempts > 100000) return -EAGAIN;
      if (r == -EBUSY) ++stats_.ebusy_reaped;
      reap_for_ebusy_locked(lk);
      continue;
    }
    return r;
  }
  return 0;
}

void UringRing::reap_for_ebusy_locked(std::unique_lock<std::mutex>& lk) noexcept {
  if (reaping_) {
    // Another thread is the reaper (blocked in the kernel, which returns as soon as a
    // completion exists): let it route, then retry.
    cv_.wait_for(lk, std::chrono::milliseconds(1));
    return;
  }
  reaping_ = true;
  unsigned n = reap_locked();
  if (n == 0 && in_flight_ > 0 && ext_arg_) {
    // Nothing to reap yet: wait briefly for a completion (the SQ cannot progress meanwhile).
    (void)sys::uring_wait_cqe(&ring_, 1);
    n = reap_locked();
  }
  reaping_ = false;
  cv_.notify_all();
}

// ---- completion --------------------------------------------------------------------------------

unsigned UringRing::reap_locked() noexcept {
  unsigned total = 0;
  bool flushed = false;
  for (;;) {
    const bool overflowed = sys::uring_cq_overflowed(&ring_);
    if (overflowed) ++stats_.overflow_flushes;  // peek below drains the kernel's overflow list
    io_uring_cqe* cqes[kReapBatch];
    const unsigned n = sys::uring_peek_batch(&ring_, cqes, kReapBatch);
    // Copy each completion out before handing the CQ entries back to the kernel.
    for (unsigned i = 0; i < n; ++i) route_locked(*cqes[i]);
    sys::uring_cq_advance(&ring_, n);
    total += n;
    if (n != 0) continue;
    if (!overflowed || flushed) break;
    flushed = true;  // the CQ looked empty but the kernel holds more: fetch them once explicitly
    if (sys::uring_flush_overflow(&ring_) < 0) break;
  }
  return total;
}

void UringRing::route_locked(const io_uring_cqe& cqe) noexcept {
  const auto idx = static_cast<std::uint32_t>(cqe.user_data & 0xffffffffu);
  const auto gen = static_cast<std::uint32_t>(cqe.user_data >> 32);
  // INVARIANT6: only a CQE naming an in-flight record of the current generation is delivered.
  if (idx >= slots_.size() || slots_[idx].state != SlotState::in_flight || slots_[idx].gen != gen) {
    ++stats_.stale;
    return;
  }
  Slot& s = slots_[idx];
  s.res = cqe.res;
  s.flags = cqe.flags;
  s.state = SlotState::done;
  s.next = kNone;
  --in_flight_;
  UringMailbox& mb = *s.mb;
  if (mb.tail_ == kNone) {
    mb.head_ = idx;
  } else {
    slots_[mb.tail_].next = idx;
  }
  mb.tail_ = idx;
  ++stats_.completions;
}

bool UringRing::pop_locked(UringMailbox& mb, UringCompletion* out) noexcept {
  if (mb.head_ == kNone) return false;
  const std::uint32_t idx = mb.head_;
  Slot& s = slots_[idx];
  mb.head_ = s.next;
  if (mb.head_ == kNone) mb.tail_ = kNone;
  *out = UringCompletion{s.token, s.res, s.flags};
  --mb.outstanding_;
  s.state = SlotState::free;
  s.mb = nullptr;
  ++s.gen;  // any later CQE still naming the old generation is stale
  s.next = free_head_;
  free_head_ = idx;
  return true;
}

void UringRing::fail_all_locked(int err) noexcept {
  for (std::uint32_t i = 0; i < slots_.size(); ++i) {
    if (slots_[i].state != SlotState::in_flight) continue;
    io_uring_cqe fake;
    std::memset(&fake, 0, sizeof fake);
    fake.user_data = user_data(i, slots_[i].gen);
    fake.res = err;
    route_locked(fake);
  }
  cv_.notify_all();
}

int UringRing::wait(UringMailbox& mb, UringCompletion* out, int timeout_ms) noexcept {
  using clock = std::chrono::steady_clock;
  const auto deadline = clock::now() + std::chrono::milliseconds(timeout_ms < 0 ? 0 : timeout_ms);
  auto remaining_ms = [&]() -> int {
    if (timeout_ms < 0) return -1;
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - clock::now());
    return left.count() <= 0 ? 0 : static_cast<int>(left.count());
  };
  std::unique_lock lk(mu_);
  for (;;) {
    if (pop_locked(mb, out)) {
      // wait() hands queued SQEs to the kernel: flush what a leader would have carried.
      if (io_uring_sq_ready(&ring_) > 0 && !reaping_) flush_or_break_locked(lk);
      return 0;
    }
    if (mb.outstanding_ == 0) return -ENOMSG;
    const int ms = remaining_ms();
    if (ms == 0) return -ETIME;
    if (!reaping_) {
      // Become the reaper: route whatever is there; if nothing, submit the queued SQEs and
      // block for a completion in ONE io_uring_enter, without holding the lock.
      reaping_ = true;
      if (reap_locked() == 0) {
        const bool can_wait = ext_arg_ || ms < 0;
        unsigned to_submit = 0;
        if (can_wait) {
          to_submit = sys::uring_flush_sq(&ring_);  // we hold mu_: the submission side is ours
        } else if (io_uring_sq_ready(&ring_) > 0) {
          flush_or_break_locked(lk);
        }
        lk.unlock();
        int r;
        if (can_wait) {
          r = sys::uring_enter_wait(&ring_, to_submit, ms);
        } else {
          // Without EXT_ARG a timed wait would need an SQE, which only lock holders may take.
          std::this_thread::sleep_for(std::chrono::milliseconds(1));
          r = 0;
        }
        lk.lock();
        if (r == -EBUSY) {
          ++stats_.ebusy_reaped;  // case 3: reaped below; the SQEs go with the next enter
          r = 0;
        }
        const unsigned n = reap_locked();
        if (r < 0 && r != -ETIME && r != -EAGAIN && n == 0 && broken_ == 0) {
          broken_ = r;  // the ring itself failed: no completion can come any more
          fail_all_locked(r);
        }
      }
      reaping_ = false;
      cv_.notify_all();  // routed completions, and the reaper role is free for another waiter
      continue;
    }
    // Another thread reaps; make sure what we queued is in the kernel, then sleep.
    if (io_uring_sq_ready(&ring_) > 0) flush_or_break_locked(lk);
    if (ms < 0) {
      cv_.wait(lk);
    } else {
      cv_.wait_until(lk, deadline);
    }
  }
}

void UringRing::flush_or_break_locked(std::unique_lock<std::mutex>& lk) noexcept {
  int r = flush_locked(lk);
  if (r < 0 && broken_ == 0) {
    broken_ = r;
    fail_all_locked(r);
  }
}

bool UringRing::try_receive(UringMailbox& mb, UringCompletion* out, bool flush) noexcept {
  std::unique_lock lk(mu_);
  if (flush && io_uring_sq_ready(&ring_) > 0) flush_or_break_locked(lk);
  if (!reaping_) {
    reaping_ = true;
    if (reap_locked() != 0) cv_.notify_all();
    reaping_ = false;
  }
  return pop_locked(mb, out);
}

}  // namespace shmkit::transport
