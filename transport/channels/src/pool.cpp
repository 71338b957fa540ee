#include "shmkit/channels/pool.hpp"

#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <new>
#include <thread>

#include "shmkit/locks/event_count.hpp"
#include "shmkit/sys/error.hpp"
#include "shmkit/sys/proc_control.hpp"
#include "shmkit/sys/syscall.hpp"

namespace shmkit {

namespace {

// State word: kind in bits 0..7, worker index in bits 8..15 (INVARIANT1).
enum : std::uint32_t { kFree = 0, kFilling = 1, kQueued = 2, kRunning = 3, kDone = 4, kFailed = 5, kDied = 6 };
constexpr std::uint32_t kind_of(std::uint32_t s) noexcept { return s & 0xffu; }
constexpr std::uint32_t worker_of(std::uint32_t s) noexcept { return (s >> 8) & 0xffu; }
constexpr std::uint32_t running(std::uint32_t w) noexcept { return kRunning | (w << 8); }
constexpr bool terminal(std::uint32_t s) noexcept {
  return kind_of(s) == kDone || kind_of(s) == kFailed || kind_of(s) == kDied;
}
constexpr std::size_t round64(std::size_t n) noexcept { return (n + 63) / 64 * 64; }
constexpr std::uint32_t kMaxWorkers = 255;  // the worker index is 8 bits of the state word
// The two submission rings (INVARIANT4 holds for each): workers look at the retry ring first.
constexpr std::uint32_t kSubmitRing = 0, kRetryRing = 1, kRings = 2;

// Queued tasks per running worker beyond which submit() also wakes a sleeping worker.
constexpr std::uint64_t kBacklogPerWorker = 4;
// How long a notify-less death can stay unnoticed by submit() and ready() (see supervise_if_due).
constexpr auto kSuperviseDue = std::chrono::milliseconds(1);

// How often an idle worker looks at getppid() and the shutdown flag without being woken.
constexpr auto kIdleCheck = std::chrono::milliseconds(100);
// How often wait() supervises the workers while it sleeps.
constexpr auto kSuperviseEvery = std::chrono::milliseconds(10);

}  // namespace

const char* to_string(TaskStatus s) noexcept {
  switch (s) {
    case TaskStatus::done: return "done";
    case TaskStatus::failed: return "failed";
    case TaskStatus::worker_died: return "worker_died";
    case TaskStatus::timed_out: return "timed_out";
    case TaskStatus::invalid: return "invalid";
  }
  return "?";
}

// One worker's hand-off words, on a line of their own (the parent reads every worker's).
struct WorkerCell {
  alignas(64) EventCount wake;  // this worker, idle, waits here for head < tail or shutdown
  Presence presence;            // spin hint: what this worker does now
};

struct WorkerPool::Shared {
  // Line 1, written by the parent on every submit and read by every worker looking for work.
  // Ring positions published (INVARIANT3, INVARIANT4): [kSubmitRing] new tasks, [kRetryRing]
  // tasks queued again after their worker died (claimed first, so a retry is not sent to the back).
  alignas(64) std::atomic<std::uint64_t> tail[kRings];
  std::atomic<std::uint32_t> shutdown;           // 1: workers exit when idle
  Presence parent;                               // spin hint for workers waiting for work
  // Line 2, moved by the workers (one CAS per claim).
  alignas(64) std::atomic<std::uint64_t> head[kRings];  // ring positions consumed (INVARIANT4)
  // Line 3: the parent waits here for an outcome; each completion notifies (a load when awake).
  alignas(64) EventCount done;
  WorkerCell worker[kMaxWorkers];
};

// A slot's first 32 bytes; its result area follows at +32 (in the same cache line when results
// are small, so a completion dirties one line), its payload area at payload_offset_.
struct WorkerPool::Slot {
  std::atomic<std::uint32_t> state;  // INVARIANT1
  std::uint16_t id;                  // message id
  std::uint8_t policy;               // TaskPolicy
  std::uint8_t deaths;               // parent-written: workers that died running it
  std::uint32_t payload_size;        // parent-written; <= max_payload (checked by the worker)
  std::uint32_t result_size;         // worker-written; <= max_result (checked by the parent)
  std::int32_t error;                // worker-written: errno when failed
  std::uint32_t reserved[3];
};

WorkerPool::Shared& WorkerPool::shared() const noexcept { return *reinterpret_cast<Shared*>(mem_); }
std::atomic<std::uint32_t>& WorkerPool::ring_entry(std::uint32_t ring, std::uint64_t position) const noexcept {
  auto* entries = reinterpret_cast<std::atomic<std::uint32_t>*>(mem_ + ring_offset_);
  return entries[(ring_mask_ + 1) * ring + (position & ring_mask_)];
}
WorkerPool::Slot& WorkerPool::slot(std::uint32_t i) const noexcept {
  return *reinterpret_cast<Slot*>(mem_ + slots_offset_ + std::size_t{i} * stride_);
}
std::byte* WorkerPool::result_area(Slot& t) const noexcept { return reinterpret_cast<std::byte*>(&t) + sizeof(Slot); }
std::byte* WorkerPool::payload_area(Slot& t) const noexcept {
  return reinterpret_cast<std::byte*>(&t) + payload_offset_;
}

WorkerPool::WorkerPool(PoolOptions opts, std::map<transport::wire::MsgId, TaskFn> handlers)
    : opts_(std::move(opts)), handlers_(std::move(handlers)) {
  static_assert(std::is_standard_layout_v<Shared> && sizeof(Shared) % 64 == 0, "the ring starts on a line");
  static_assert(std::is_standard_layout_v<Slot> && sizeof(Slot) == 32, "the result area starts at +32");
  static_assert(std::atomic<std::uint64_t>::is_always_lock_free, "ring positions are shared between processes");
  static_assert(std::size(decltype(tail_){}) == kRings, "one parent-side tail per ring");
  if (opts_.workers == 0 || opts_.workers > kMaxWorkers)
    throw Error(Errc::invalid_argument, "WorkerPool: workers must be 1..255");
  if (opts_.max_tasks == 0 || opts_.max_tasks > (1u << 20))
    throw Error(Errc::invalid_argument, "WorkerPool: max_tasks must be 1..2^20");
  if (opts_.max_payload > (1u << 30) || opts_.max_result > (1u << 30))
    throw Error(Errc::invalid_argument, "WorkerPool: max_payload and max_result must be <= 1 GiB");
  // The ring holds every queued task once plus at most one stale entry per worker (INVARIANT4);
  // twice that, rounded up to a power of two, so that a full ring never happens in practice and
  // publish() can still recover from one (it skips stale entries itself).
  std::uint64_t ring = 1;
  while (ring < 2ull * (opts_.max_tasks + opts_.workers)) ring <<= 1;
  ring_mask_ = ring - 1;
  ring_offset_ = sizeof(Shared);
  slots_offset_ = round64(ring_offset_ + kRings * ring * sizeof(std::uint32_t));
  payload_offset_ = round64(sizeof(Slot) + opts_.max_result);
  stride_ = payload_offset_ + round64(opts_.max_payload);
  mem_size_ = slots_offset_ + stride_ * opts_.max_tasks;
  void* p = nullptr;
  sys::check(sys::mmap(&p, nullptr, mem_size_, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0),
             "WorkerPool: mmap of the task table (" + std::to_string(mem_size_) + " bytes)");
  mem_ = static_cast<std::byte*>(p);  // zero-filled: every slot free, the ring empty
  new (mem_) Shared{};
  for (std::uint32_t i = 0; i < opts_.max_tasks; ++i) new (&slot(i)) Slot{};
  free_slots_.reserve(opts_.max_tasks);
  for (std::uint32_t i = opts_.max_tasks; i-- > 0;) free_slots_.push_back(i);  // slot 0 is used first
  generation_.assign(opts_.max_tasks, 0);
  parent_ = sys::getpid();
  pids_.assign(opts_.workers, -1);
  try {
    for (std::uint32_t w = 0; w < opts_.workers; ++w) pids_[w] = spawn(w);
  } catch (...) {
    shutdown();
    (void)sys::munmap(mem_, mem_size_);
    throw;
  }
}

WorkerPool::~WorkerPool() {
  shutdown();
  if (mem_ != nullptr) (void)sys::munmap(mem_, mem_size_);
}

pid_t WorkerPool::spawn(std::uint32_t index) {
  std::fflush(nullptr);  // the child must not write the parent's buffered output again
  pid_t pid = sys::fork();
  if (pid < 0) throw_errno("WorkerPool: fork of worker " + std::to_string(index), -pid);
  if (pid == 0) worker_main(index);
  return pid;
}

bool WorkerPool::try_claim(std::uint32_t worker, std::uint32_t& claimed) const noexcept {
  return try_claim_from(kRetryRing, worker, claimed) || try_claim_from(kSubmitRing, worker, claimed);
}

bool WorkerPool::try_claim_from(std::uint32_t ring, std::uint32_t worker, std::uint32_t& claimed) const noexcept {
  Shared& sh = shared();
  // Each round claims or moves head on by one (INVARIANT4), and a sane ring holds at most
  // ring_mask_ + 1 entries: the bound only stops a worker from looping over a corrupt tail.
  for (std::uint64_t round = 0; round <= 2 * ring_mask_ + 2; ++round) {
    // acquire on head: a position another worker moved past is not looked at again below.
    std::uint64_t h = sh.head[ring].load(std::memory_order_acquire);
    // acquire on tail: pairs with publish()'s release store, so the ring entry and the queued
    // slot (its fields and payload) written before it are visible.
    if (h >= sh.tail[ring].load(std::memory_order_acquire)) return false;
    // relaxed: the entry was published by the tail load above; a racing overwrite (the ring
    // wrapped, so head has moved past h) only makes this a stale index, handled by the CAS.
    const std::uint32_t i = ring_entry(ring, h).load(std::memory_order_relaxed);
    if (i < opts_.max_tasks) {  // the index came from shared memory: bound it before use
      std::uint32_t s = slot(i).state.load(std::memory_order_relaxed);
      // acquire on success: pairs with publish()'s release of `queued` (INVARIANT2: the claim
      // is this one CAS; a worker killed after it leaves running(worker) for the parent).
      if (kind_of(s) == kQueued && slot(i).state.compare_exchange_strong(s, running(worker), std::memory_order_acquire,
                                                                          std::memory_order_relaxed)) {
        // relaxed: moving head on is a hint to the others (INVARIANT4); failing means someone
        // already did, or h was stale and the claim was of a later entry (then that one is skipped).
        (void)sh.head[ring].compare_exchange_strong(h, h + 1, std::memory_order_relaxed, std::memory_order_relaxed);
        claimed = i;
        return true;
      }
    }
    // Position h's task is claimed already (or h is stale): move head past it and look again.
    // relaxed: as above; the loop re-reads head with acquire.
    (void)sh.head[ring].compare_exchange_strong(h, h + 1, std::memory_order_relaxed, std::memory_order_relaxed);
  }
  return false;
}

void WorkerPool::run_task(std::uint32_t worker, std::uint32_t i) const noexcept {
  Slot& t = slot(i);
  int code = 0;
  std::size_t result_size = 0;
  auto it = handlers_.find(t.id);
  if (t.payload_size > opts_.max_payload) {
    code = EPROTO;
  } else if (it == handlers_.end()) {
    code = EOPNOTSUPP;
  } else {
    TaskContext ctx{t.id, worker, std::uint32_t{t.deaths} + 1u};
    try {
      code = it->second(ctx, {payload_area(t), t.payload_size}, {result_area(t), opts_.max_result}, result_size);
    } catch (...) {
      code = EIO;  // a throwing handler fails its task, not the worker
    }
    if (code == 0 && result_size > opts_.max_result) code = EMSGSIZE;
    if (code < 0) code = -code;
  }
  t.result_size = code == 0 ? static_cast<std::uint32_t>(result_size) : 0;
  t.error = code;
  // release: the result bytes and fields above are visible to the parent's acquire load.
  t.state.store(code == 0 ? kDone : kFailed, std::memory_order_release);
  // The fence inside pairs the state store above with the parent's prepare_wait (EventCount
  // INVARIANT1): a parent about to sleep for this task is woken.
  shared().done.notify_all(&shared().parent);
}

void WorkerPool::worker_main(std::uint32_t index) noexcept {
  // Die with the parent: the signal covers a parent killed from now on; the getppid() check
  // covers one that died between fork() and the prctl (then no signal will ever come).
  if (sys::set_parent_death_signal(SIGKILL) != 0 || sys::getppid() != parent_) sys::exit_now(0);
  Shared& sh = shared();
  WorkerCell& me = sh.worker[index];
  SpinPolicy spin;
  auto work_or_shutdown = [&] {
    // acquire: pairs with publish()'s and shutdown()'s release stores (what they publish is
    // read after this returns true).
    return sh.head[kRetryRing].load(std::memory_order_acquire) < sh.tail[kRetryRing].load(std::memory_order_acquire) ||
           sh.head[kSubmitRing].load(std::memory_order_acquire) < sh.tail[kSubmitRing].load(std::memory_order_acquire) ||
           sh.shutdown.load(std::memory_order_acquire) != 0;
  };
  for (;;) {
    std::uint32_t i = 0;
    if (try_claim(index, i)) {
      run_task(index, i);
      continue;
    }
    if (sh.shutdown.load(std::memory_order_acquire) != 0) sys::exit_now(0);
    // Spins only while the parent runs on another CPU, then sleeps; wakes at least every
    // kIdleCheck to look at getppid().
    if (await_until(me.wake, work_or_shutdown, sys::Clock::now() + kIdleCheck, spin, me.presence, sh.parent) ==
            AwaitResult::timed_out &&
        sys::getppid() != parent_)
      sys::exit_now(0);
  }
}

bool WorkerPool::publish(std::uint32_t ring, std::uint32_t i) noexcept {
  Shared& sh = shared();
  if (tail_[ring] - head_seen_[ring] > ring_mask_) {
    // Looks full: re-read head (acquire: entries before it are no longer read by workers, so they
    // may be overwritten), and skip stale entries at head ourselves — a slot that is not queued
    // was claimed (INVARIANT4), so moving head past it loses nothing.
    head_seen_[ring] = sh.head[ring].load(std::memory_order_acquire);
    while (tail_[ring] - head_seen_[ring] > ring_mask_) {
      const std::uint32_t at = ring_entry(ring, head_seen_[ring]).load(std::memory_order_relaxed);
      if (at < opts_.max_tasks && kind_of(slot(at).state.load(std::memory_order_relaxed)) == kQueued) return false;
      std::uint64_t h = head_seen_[ring];
      // acq_rel on the CAS: as the acquire load above when it fails (h is then refreshed).
      if (sh.head[ring].compare_exchange_strong(h, h + 1, std::memory_order_acq_rel, std::memory_order_acquire)) ++h;
      head_seen_[ring] = h;
    }
  }
  // relaxed: published by the release store of tail below.
  ring_entry(ring, tail_[ring]).store(i, std::memory_order_relaxed);
  // release: publishes the slot's fields, payload and `queued` state and the ring entry to the
  // claiming worker's acquire load of tail (try_claim).
  sh.tail[ring].store(++tail_[ring], std::memory_order_release);
  wake_workers();
  return true;
}

void WorkerPool::wake_workers() noexcept {
  // One notify on any one worker's EventCount is enough for the task just published: its fence
  // pairs the tail store with that worker's prepare_wait (EventCount INVARIANT1), so the worker
  // either sees the task before it sleeps or is woken. Which worker only decides the cost:
  // notifying one that runs is a fence and a load; one that sleeps pays a FUTEX_WAKE and a
  // wake-up. So prefer a running worker, and wake a sleeping one only when none runs or when
  // tasks queue up faster than the running ones take them.
  Shared& sh = shared();
  const std::uint32_t n = opts_.workers;
  std::uint32_t running_worker = n, sleeping_worker = n;
  for (std::uint32_t k = 0; k < n; ++k) {
    const std::uint32_t w = (next_wake_ + k) % n;
    if (Presence::state_of(sh.worker[w].presence.word.load(std::memory_order_relaxed)) == Presence::sleeping) {
      if (sleeping_worker == n) sleeping_worker = w;
    } else if (running_worker == n) {
      running_worker = w;
    }
  }
  if (running_worker != n) {
    sh.worker[running_worker].wake.notify_all(&sh.worker[running_worker].presence);
    if (sleeping_worker == n || tail_[kSubmitRing] - head_seen_[kSubmitRing] <= kBacklogPerWorker) return;
    // relaxed: only an estimate of the backlog (the notify below orders what matters).
    head_seen_[kSubmitRing] = sh.head[kSubmitRing].load(std::memory_order_relaxed);
    if (tail_[kSubmitRing] - head_seen_[kSubmitRing] <= kBacklogPerWorker) return;
  }
  const std::uint32_t w = sleeping_worker != n ? sleeping_worker : next_wake_ % n;
  sh.worker[w].wake.notify_all(&sh.worker[w].presence);
  next_wake_ = (w + 1) % n;
}

TaskHandle WorkerPool::submit(transport::wire::MsgId id, std::span<const std::byte> payload, TaskPolicy policy) {
  if (payload.size() > opts_.max_payload)
    throw Error(Errc::invalid_argument, "WorkerPool::submit: payload of " + std::to_string(payload.size()) +
                                            " bytes exceeds max_payload " + std::to_string(opts_.max_payload));
  supervise_if_due();
  if (stopped_ || free_slots_.empty()) return {};
  const std::uint32_t i = free_slots_.back();
  Slot& t = slot(i);
  // Only the parent moves a slot out of free (INVARIANT3); no worker reads it until it is queued.
  t.state.store(kFilling, std::memory_order_relaxed);
  t.id = id;
  t.policy = static_cast<std::uint8_t>(policy);
  t.deaths = 0;
  t.payload_size = static_cast<std::uint32_t>(payload.size());
  t.result_size = 0;
  t.error = 0;
  if (!payload.empty()) std::memcpy(payload_area(t), payload.data(), payload.size());
  // relaxed: published by publish()'s release store of tail, the only way a worker finds it.
  t.state.store(kQueued, std::memory_order_relaxed);
  if (!publish(kSubmitRing, i)) {
    t.state.store(kFree, std::memory_order_relaxed);  // never published: no worker saw it
    return {};
  }
  free_slots_.pop_back();
  ++stats_.submitted;
  return {i, ++generation_[i]};
}

bool WorkerPool::ready(TaskHandle h) {
  if (!h.valid() || h.slot >= opts_.max_tasks || generation_[h.slot] != h.generation) return false;
  Slot& t = slot(h.slot);
  // acquire: pairs with the worker's release of the outcome (as in wait()).
  std::uint32_t s = t.state.load(std::memory_order_acquire);
  if (kind_of(s) == kFree || kind_of(s) == kFilling) return false;  // collected already
  if (terminal(s)) return true;
  // Pending: a worker that died running it notifies nobody, so look for deaths here (issue 14.15).
  supervise_if_due();
  return terminal(t.state.load(std::memory_order_acquire));
}

const Presence& WorkerPool::likely_finisher(std::uint32_t state) const noexcept {
  Shared& sh = shared();
  if (kind_of(state) == kRunning && worker_of(state) < opts_.workers) return sh.worker[worker_of(state)].presence;
  // Queued: whichever worker runs now will probably take it.
  const int me = sys::current_cpu();
  for (std::uint32_t w = 0; w < opts_.workers; ++w)
    if (sh.worker[w].presence.worth_spinning_for(me)) return sh.worker[w].presence;
  return sh.worker[0].presence;
}

TaskResult WorkerPool::wait(TaskHandle h, sys::Deadline deadline) {
  TaskResult out;
  if (!h.valid() || h.slot >= opts_.max_tasks || generation_[h.slot] != h.generation) return out;
  Slot& t = slot(h.slot);
  // acquire: pairs with the worker's release store of the outcome (run_task), so the result
  // area and fields read below are the worker's.
  std::uint32_t s = t.state.load(std::memory_order_acquire);
  if (kind_of(s) == kFree || kind_of(s) == kFilling) return out;  // collected already
  Shared& sh = shared();
  auto outcome = [&] {
    s = t.state.load(std::memory_order_acquire);  // as above
    return terminal(s);
  };
  while (!terminal(s)) {
    const auto now = sys::Clock::now();
    if (now >= deadline) {
      out.status = TaskStatus::timed_out;
      return out;
    }
    // A dead worker notifies nobody: wait in slices and supervise between them.
    if (await_until(sh.done, outcome, std::min(deadline, now + kSuperviseEvery), wait_spin_, sh.parent,
                    likely_finisher(s)) == AwaitResult::timed_out) {
      supervise();
      (void)outcome();
    }
  }
  out.attempts = t.deaths + (kind_of(s) == kDied ? 0u : 1u);
  if (kind_of(s) == kDone) {
    // The result size came from another process: bound it before use.
    const bool fits = t.result_size <= opts_.max_result;
    const std::byte* r = result_area(t);
    if (fits) out.result.assign(r, r + t.result_size);
    out.status = fits ? TaskStatus::done : TaskStatus::failed;
    if (!fits) out.error = EPROTO;
    ++stats_.completed;
  } else if (kind_of(s) == kFailed) {
    out.status = TaskStatus::failed;
    out.error = t.error;
    ++stats_.failed;
  } else {
    out.status = TaskStatus::worker_died;
  }
  // relaxed: only the parent moves a slot out of free (INVARIANT3); a worker never reads a free slot.
  t.state.store(kFree, std::memory_order_relaxed);
  free_slots_.push_back(h.slot);
  return out;
}

void WorkerPool::settle_dead_worker(std::uint32_t index) {
  for (std::uint32_t i = 0; i < opts_.max_tasks; ++i) {
    Slot& t = slot(i);
    std::uint32_t s = t.state.load(std::memory_order_acquire);
    if (kind_of(s) != kRunning || worker_of(s) != index) continue;
    // The worker is reaped: nothing else writes this slot now (INVARIANT2/3).
    ++t.deaths;
    if (static_cast<TaskPolicy>(t.policy) == TaskPolicy::retry_once && t.deaths == 1 && !stopped_) {
      // Queued again, on the retry ring that workers look at first (its old position is behind
      // head or will be skipped: INVARIANT4).
      t.state.store(kQueued, std::memory_order_relaxed);
      if (publish(kRetryRing, i)) {
        ++stats_.retries;
        continue;
      }
    }
    // release: a parent thread that reads worker_died reads deaths with it (one thread today).
    t.state.store(kDied, std::memory_order_release);
    ++stats_.died_tasks;
  }
}

void WorkerPool::supervise_if_due() {
  const auto now = sys::Clock::now();
  if (now < next_supervise_) return;
  next_supervise_ = now + kSuperviseDue;
  (void)supervise();
}

std::uint32_t WorkerPool::supervise() {
  if (stopped_) return 0;
  std::uint32_t dead = 0;
  for (std::uint32_t w = 0; w < opts_.workers; ++w) {
    int st = 0;
    pid_t r = sys::waitpid(pids_[w], &st, WNOHANG);
    if (r != pids_[w]) continue;  // still running (0) — or an error we cannot act on
    ++dead;
    ++stats_.worker_deaths;
    settle_dead_worker(w);
    if (opts_.on_worker_death) stats_.reclaimed += opts_.on_worker_death(pids_[w]);
    pids_[w] = spawn(w);
    ++stats_.respawns;
  }
  return dead;
}

void WorkerPool::shutdown() noexcept {
  if (stopped_ || mem_ == nullptr) return;
  stopped_ = true;
  Shared& sh = shared();
  // release: pairs with the workers' acquire load in their wait condition.
  sh.shutdown.store(1, std::memory_order_release);
  // The fence inside each notify pairs the store with that worker's prepare_wait (EventCount
  // INVARIANT1): every worker, asleep or about to be, sees the flag.
  for (std::uint32_t w = 0; w < opts_.workers; ++w) sh.worker[w].wake.notify_all();
  auto grace_end = sys::Clock::now() + opts_.shutdown_grace;
  for (std::uint32_t w = 0; w < pids_.size(); ++w) {
    if (pids_[w] <= 0) continue;
    int st = 0;
    for (;;) {
      pid_t r = sys::waitpid(pids_[w], &st, WNOHANG);
      if (r == pids_[w] || r < 0) break;
      if (sys::Clock::now() >= grace_end) {
        (void)sys::kill(pids_[w], SIGKILL);  // a handler that does not finish in time
        (void)sys::waitpid(pids_[w], &st, 0);
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    pids_[w] = -1;
  }
  // Tasks that never finished are reported worker_died (their workers are gone).
  for (std::uint32_t i = 0; i < opts_.max_tasks; ++i) {
    std::uint32_t s = slot(i).state.load(std::memory_order_acquire);
    if (kind_of(s) == kQueued || kind_of(s) == kRunning) slot(i).state.store(kDied, std::memory_order_release);
  }
}

}  // namespace shmkit
