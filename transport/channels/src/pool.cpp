#include "shmkit/channels/pool.hpp"

#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <new>
#include <thread>

#include "shmkit/heap/heap.hpp"
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

struct WorkerPool::Shared {
  alignas(64) std::atomic<std::uint32_t> work_seq;  // futex word idle workers sleep on
  std::atomic<std::uint32_t> shutdown;              // 1: workers exit when idle
};

struct WorkerPool::Slot {
  alignas(64) std::atomic<std::uint32_t> state;  // INVARIANT1; futex word the parent waits on
  std::uint32_t generation;                      // parent-only: bumped by each submit
  std::uint16_t id;                              // message id
  std::uint8_t policy;                           // TaskPolicy
  std::uint8_t deaths;                           // parent-only: workers that died running it
  std::uint32_t payload_size;                    // <= max_payload (checked by the worker)
  std::uint32_t result_size;                     // worker: <= max_result (checked by the parent)
  std::int32_t error;                            // worker: errno when failed
  // payload area at +64, result area at +64+round64(max_payload)
};

WorkerPool::Slot& WorkerPool::slot(std::uint32_t i) const noexcept {
  return *reinterpret_cast<Slot*>(mem_ + 64 + std::size_t{i} * stride_);
}

WorkerPool::WorkerPool(PoolOptions opts, std::map<transport::wire::MsgId, TaskFn> handlers)
    : opts_(opts), handlers_(std::move(handlers)) {
  static_assert(std::is_standard_layout_v<Shared> && sizeof(Shared) <= 64, "Shared fits before slot 0");
  static_assert(std::is_standard_layout_v<Slot> && sizeof(Slot) == 64, "the payload area starts at +64");
  if (opts_.workers == 0 || opts_.workers > 255)
    throw Error(Errc::invalid_argument, "WorkerPool: workers must be 1..255");
  if (opts_.max_tasks == 0 || opts_.max_tasks > (1u << 20))
    throw Error(Errc::invalid_argument, "WorkerPool: max_tasks must be 1..2^20");
  if (opts_.max_payload > (1u << 30) || opts_.max_result > (1u << 30))
    throw Error(Errc::invalid_argument, "WorkerPool: max_payload and max_result must be <= 1 GiB");
  stride_ = 64 + round64(opts_.max_payload) + round64(opts_.max_result);
  mem_size_ = 64 + stride_ * opts_.max_tasks;
  void* p = nullptr;
  sys::check(sys::mmap(&p, nullptr, mem_size_, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0),
             "WorkerPool: mmap of the task table (" + std::to_string(mem_size_) + " bytes)");
  mem_ = static_cast<std::byte*>(p);  // zero-filled: every slot free, work_seq 0
  new (mem_) Shared{};
  for (std::uint32_t i = 0; i < opts_.max_tasks; ++i) new (&slot(i)) Slot{};
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

void WorkerPool::worker_main(std::uint32_t index) noexcept {
  // Die with the parent: the signal covers a parent killed from now on; the getppid() check
  // covers one that died between fork() and the prctl (then no signal will ever come).
  if (sys::set_parent_death_signal(SIGKILL) != 0 || sys::getppid() != parent_) sys::exit_now(0);
  auto& sh = *reinterpret_cast<Shared*>(mem_);
  std::uint32_t start = index;
  for (;;) {
    if (sh.shutdown.load(std::memory_order_acquire) != 0) sys::exit_now(0);
    // Read the doorbell before scanning, so a submit after the scan changes it and the wait
    // below returns at once (no lost wake-up).
    std::uint32_t seen = sh.work_seq.load(std::memory_order_acquire);
    std::uint32_t claimed = UINT32_MAX;
    for (std::uint32_t k = 0; k < opts_.max_tasks && claimed == UINT32_MAX; ++k) {
      std::uint32_t i = (start + k) % opts_.max_tasks;
      std::uint32_t s = slot(i).state.load(std::memory_order_relaxed);
      // acquire on success: pairs with the parent's release of `queued`, so the task's fields
      // and payload are visible (INVARIANT2: the claim is this one CAS).
      if (kind_of(s) == kQueued &&
          slot(i).state.compare_exchange_strong(s, running(index), std::memory_order_acquire,
                                                std::memory_order_relaxed))
        claimed = i;
    }
    if (claimed == UINT32_MAX) {
      (void)sys::futex_wait(sh.work_seq, seen, sys::Clock::now() + kIdleCheck);
      if (sys::getppid() != parent_) sys::exit_now(0);
      continue;
    }
    start = claimed + 1;
    Slot& t = slot(claimed);
    std::byte* payload = reinterpret_cast<std::byte*>(&t) + 64;
    std::byte* result = payload + round64(opts_.max_payload);
    int code = 0;
    std::size_t result_size = 0;
    auto it = handlers_.find(t.id);
    if (t.payload_size > opts_.max_payload) {
      code = EPROTO;
    } else if (it == handlers_.end()) {
      code = EOPNOTSUPP;
    } else {
      TaskContext ctx{t.id, index, std::uint32_t{t.deaths} + 1u, opts_.heap};
      try {
        code = it->second(ctx, {payload, t.payload_size}, {result, opts_.max_result}, result_size);
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
    sys::futex_wake(t.state, 1);
  }
}

TaskHandle WorkerPool::submit(transport::wire::MsgId id, std::span<const std::byte> payload, TaskPolicy policy) {
  if (payload.size() > opts_.max_payload)
    throw Error(Errc::invalid_argument, "WorkerPool::submit: payload of " + std::to_string(payload.size()) +
                                            " bytes exceeds max_payload " + std::to_string(opts_.max_payload));
  supervise();
  if (stopped_) return {};
  for (std::uint32_t i = 0; i < opts_.max_tasks; ++i) {
    Slot& t = slot(i);
    // Only the parent moves a slot out of free (INVARIANT3): a relaxed read is exact.
    if (t.state.load(std::memory_order_relaxed) != kFree) continue;
    t.state.store(kFilling, std::memory_order_relaxed);
    ++t.generation;
    t.id = id;
    t.policy = static_cast<std::uint8_t>(policy);
    t.deaths = 0;
    t.payload_size = static_cast<std::uint32_t>(payload.size());
    t.result_size = 0;
    t.error = 0;
    if (!payload.empty()) std::memcpy(reinterpret_cast<std::byte*>(&t) + 64, payload.data(), payload.size());
    // release: publishes the fields and payload to the claiming worker's acquire CAS.
    t.state.store(kQueued, std::memory_order_release);
    auto& sh = *reinterpret_cast<Shared*>(mem_);
    sh.work_seq.fetch_add(1, std::memory_order_release);
    sys::futex_wake(sh.work_seq, 1);
    ++stats_.submitted;
    return {i, t.generation};
  }
  return {};
}

bool WorkerPool::ready(TaskHandle h) const noexcept {
  if (!h.valid() || h.slot >= opts_.max_tasks || slot(h.slot).generation != h.generation) return false;
  return terminal(slot(h.slot).state.load(std::memory_order_acquire));
}

TaskResult WorkerPool::wait(TaskHandle h, sys::Deadline deadline) {
  TaskResult out;
  if (!h.valid() || h.slot >= opts_.max_tasks) return out;
  Slot& t = slot(h.slot);
  std::uint32_t s = t.state.load(std::memory_order_acquire);
  if (t.generation != h.generation || kind_of(s) == kFree || kind_of(s) == kFilling) return out;
  for (;;) {
    s = t.state.load(std::memory_order_acquire);  // pairs with the worker's release store
    if (terminal(s)) break;
    auto now = sys::Clock::now();
    if (now >= deadline) {
      out.status = TaskStatus::timed_out;
      return out;
    }
    (void)sys::futex_wait(t.state, s, std::min(deadline, now + kSuperviseEvery));
    supervise();
  }
  out.attempts = t.deaths + (kind_of(s) == kDied ? 0u : 1u);
  if (kind_of(s) == kDone) {
    // The result size came from another process: bound it before use.
    std::uint32_t n = t.result_size <= opts_.max_result ? t.result_size : 0;
    const std::byte* r = reinterpret_cast<std::byte*>(&t) + 64 + round64(opts_.max_payload);
    out.result.assign(r, r + n);
    out.status = t.result_size <= opts_.max_result ? TaskStatus::done : TaskStatus::failed;
    if (out.status == TaskStatus::failed) out.error = EPROTO;
    ++stats_.completed;
  } else if (kind_of(s) == kFailed) {
    out.status = TaskStatus::failed;
    out.error = t.error;
    ++stats_.failed;
  } else {
    out.status = TaskStatus::worker_died;
  }
  t.state.store(kFree, std::memory_order_release);
  return out;
}

void WorkerPool::settle_dead_worker(std::uint32_t index) {
  auto& sh = *reinterpret_cast<Shared*>(mem_);
  for (std::uint32_t i = 0; i < opts_.max_tasks; ++i) {
    Slot& t = slot(i);
    std::uint32_t s = t.state.load(std::memory_order_acquire);
    if (kind_of(s) != kRunning || worker_of(s) != index) continue;
    // The worker is reaped: nothing else writes this slot now (INVARIANT2/3).
    ++t.deaths;
    if (static_cast<TaskPolicy>(t.policy) == TaskPolicy::retry_once && t.deaths == 1 && !stopped_) {
      t.state.store(kQueued, std::memory_order_release);
      sh.work_seq.fetch_add(1, std::memory_order_release);
      sys::futex_wake(sh.work_seq, 1);
      ++stats_.retries;
    } else {
      t.state.store(kDied, std::memory_order_release);
      ++stats_.died_tasks;
    }
  }
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
    if (opts_.heap != nullptr) stats_.heap_reclaimed += opts_.heap->reclaim_dead();
    pids_[w] = spawn(w);
    ++stats_.respawns;
  }
  return dead;
}

void WorkerPool::shutdown() noexcept {
  if (stopped_ || mem_ == nullptr) return;
  stopped_ = true;
  auto& sh = *reinterpret_cast<Shared*>(mem_);
  sh.shutdown.store(1, std::memory_order_release);
  sh.work_seq.fetch_add(1, std::memory_order_release);
  sys::futex_wake_all(sh.work_seq);
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
