/// WorkerPool: N forked worker processes that share the parent's mappings (the user's Segment and
/// its Heap, inherited through fork) and run tasks — a message id and a payload — submitted by
/// the parent, which gets a future-like TaskHandle back.
///
/// Shared state: one MAP_SHARED mapping the pool makes before forking (inherited by every worker;
/// it holds indices and inline byte areas only): a header, two rings of slot indices (new tasks,
/// and retries, which workers take first) and a task table.
/// Each slot of the table carries one task's payload and result inline (sizes fixed by
/// PoolOptions), so no allocation can leak when a worker dies, and a 32-bit state word:
///
///   free -> filling -> queued -> running(w) -> done | failed      (parent: -> free after wait())
///                        ^            |
///                        +------------+  worker w died and the task may be retried once
///                                     +-> worker_died            (died, no retry left)
///
/// INVARIANT1  state kind ∈ {free, filling, queued, running, done, failed, worker_died}; the worker
///             index in bits 8..15 is meaningful only for running.
/// INVARIANT2  a worker claims a task with one CAS queued -> running(w): the claim and the record
///             of who holds it are the same store, so a worker killed at any instruction leaves
///             each task either queued (not claimed) or running(w) with w dead — which the parent,
///             after reaping w, turns into queued (retry) or worker_died. No task is lost and none
///             runs twice unless the caller asked for a retry.
/// INVARIANT3  only the parent writes free/filling/queued, the submission ring and its tail, and
///             reads results; only the claiming worker writes the result area and the
///             running -> done|failed transition.
/// INVARIANT4  (each ring, so that no worker scans the table) every queued task's slot index sits
///             at a position p of one ring with head <= p < tail; head only passes position p
///             once someone saw that p's slot is no longer queued (its task claimed). A worker
///             claims at position head (INVARIANT2's CAS) and then moves head on, or, finding the
///             slot already claimed (by a worker that died or stalled before moving head), moves
///             head on for it. Stale indices (a slot claimed, finished and queued again at a later
///             position) cost a skipped entry, never a lost or doubled task: the state CAS decides.
///
/// Hand-offs: an idle worker waits for "head < tail" on its own EventCount (locks/event_count.hpp);
/// submit() notifies one worker — a running one if any (a fence and a load, no system call), a
/// sleeping one only when none runs or tasks queue up. The parent waits for a task's outcome on
/// another EventCount that each completion notifies. So a busy pool makes no system call per
/// task; a waiter spins only while its partner runs on another CPU (spin_policy.hpp).
///
/// Death of a worker: the parent notices it in supervise() — run by wait() while it waits (every
/// 10 ms), and by submit() and ready() at most once a millisecond — by reaping with waitpid; its
/// running task is failed or requeued (TaskPolicy), PoolOptions::on_worker_death runs (e.g. to
/// reclaim the heap blocks the dead worker owned: the pool itself knows nothing about heaps),
/// and a replacement worker is forked into the same index. Locks it held are recovered by their
/// next acquirer, which gets LockResult::owner_died from the kernel's robust list (locks/).
/// Death of the parent: each worker sets PR_SET_PDEATHSIG(SIGKILL) right after fork and then
/// checks getppid() (the parent may have died before the prctl), and re-checks getppid() whenever
/// it wakes with nothing to do (at least every 100 ms), so no worker outlives its parent.
/// shutdown() (and the destructor) stops the workers gracefully, SIGKILLs any that do not exit
/// within the grace period, and reaps every one: no process is left behind.
///
/// Threads: one parent thread uses the pool at a time. The pool must not be used in a forked
/// child of the parent (the workers are not that process's children).
#pragma once

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <span>
#include <vector>

#include "shmkit/locks/spin_policy.hpp"
#include "shmkit/sys/futex_word.hpp"
#include "shmkit/transport/wire.hpp"

namespace shmkit {

enum class TaskPolicy : std::uint8_t { fail_on_worker_death = 0, retry_once = 1 };

enum class TaskStatus : std::uint8_t {
  done = 0,      // the handler returned 0; result holds its bytes
  failed,        // the handler returned an errno (error), threw (EIO), or the id has no handler
                 /// (EOPNOTSUPP), or the result did not fit (EMSGSIZE)
  worker_died,   // the worker running it died (and no retry was left)
  timed_out,     // wait(): the deadline passed; the task is still pending, wait again
  invalid,       // a handle that is not (or no longer) a pending task of this pool
};
const char* to_string(TaskStatus s) noexcept;

struct TaskHandle {
  std::uint32_t slot = UINT32_MAX;
  std::uint32_t generation = 0;
  bool valid() const noexcept { return slot != UINT32_MAX; }
};

struct TaskResult {
  TaskStatus status = TaskStatus::invalid;
  int error = 0;                  // positive errno when failed
  std::uint32_t attempts = 0;     // how many workers started it (2 after a retry)
  std::vector<std::byte> result;  // done: the handler's result bytes
};

struct TaskContext {
  transport::wire::MsgId id;
  std::uint32_t worker;   // index 0..workers-1
  std::uint32_t attempt;  // 1, or 2 on the retry
};
/// Runs in a worker: reads `payload`, writes up to result.size() bytes into `result`, sets
/// result_size and returns 0; or returns a positive errno.
using TaskFn = std::function<int(const TaskContext& ctx, std::span<const std::byte> payload,
                                 std::span<std::byte> result, std::size_t& result_size)>;

struct PoolOptions {
  std::uint32_t workers = 2;
  std::uint32_t max_tasks = 256;                // pending + uncollected tasks at once
  std::uint32_t max_payload = 64 * 1024;
  std::uint32_t max_result = 64 * 1024;
  /// Runs in the parent after a dead worker's tasks are settled and before it is replaced; returns
  /// how many resources it reclaimed (added to stats().reclaimed). E.g. for blocks a worker took
  /// with Heap::allocate_owned: [&heap](pid_t) { return heap.reclaim_dead(); }. Must not throw.
  std::function<std::uint64_t(pid_t dead_worker)> on_worker_death{};
  std::chrono::milliseconds shutdown_grace{2000};
};

struct PoolStats {
  std::uint64_t submitted = 0, completed = 0, failed = 0, worker_deaths = 0, retries = 0,
                died_tasks = 0, respawns = 0, reclaimed = 0;
};

class WorkerPool {
 public:
  /// Creates the task table and forks the workers. Throws shmkit::Error on a bad option or when
  /// mmap/fork fail.
  WorkerPool(PoolOptions opts, std::map<transport::wire::MsgId, TaskFn> handlers);
  ~WorkerPool();
  WorkerPool(const WorkerPool&) = delete;
  WorkerPool& operator=(const WorkerPool&) = delete;

  /// Queues a task. An invalid handle when every slot holds a pending or uncollected task (collect
  /// results with wait() to free slots) or after shutdown; throws Error(invalid_argument) when the
  /// payload is larger than max_payload.
  TaskHandle submit(transport::wire::MsgId id, std::span<const std::byte> payload,
                    TaskPolicy policy = TaskPolicy::fail_on_worker_death);
  /// Waits for the task's outcome (supervising the workers meanwhile) and frees its slot, except
  /// on timed_out. A handle can be waited for once.
  TaskResult wait(TaskHandle h, sys::Deadline deadline = sys::kNoDeadline);
  /// True when the task has an outcome (wait() will not block). A task whose worker died becomes
  /// ready by itself: while the task is pending, ready() supervises the workers (at most once a
  /// millisecond), so polling ready() alone sees worker_died (or the retry) within about 1 ms of
  /// the death. Throws Error only when a replacement worker cannot be forked (as supervise()).
  bool ready(TaskHandle h);

  /// Reaps dead workers, settles their tasks, runs on_worker_death, respawns them. Returns the
  /// number of workers found dead. wait(), submit() and ready() call it (see above).
  std::uint32_t supervise();
  /// Stops the workers (graceful, then SIGKILL after shutdown_grace) and reaps them. Idempotent.
  /// Pending tasks are reported worker_died by later wait() calls.
  void shutdown() noexcept;

  std::vector<pid_t> worker_pids() const { return pids_; }
  const PoolStats& stats() const noexcept { return stats_; }

 private:
  struct Shared;
  struct Slot;
  Shared& shared() const noexcept;
  std::atomic<std::uint32_t>& ring_entry(std::uint32_t ring, std::uint64_t position) const noexcept;
  Slot& slot(std::uint32_t i) const noexcept;
  std::byte* payload_area(Slot& t) const noexcept;
  std::byte* result_area(Slot& t) const noexcept;
  pid_t spawn(std::uint32_t index);
  [[noreturn]] void worker_main(std::uint32_t index) noexcept;
  bool try_claim(std::uint32_t worker, std::uint32_t& claimed) const noexcept;
  bool try_claim_from(std::uint32_t ring, std::uint32_t worker, std::uint32_t& claimed) const noexcept;
  void run_task(std::uint32_t worker, std::uint32_t i) const noexcept;
  bool publish(std::uint32_t ring, std::uint32_t i) noexcept;
  void wake_workers() noexcept;
  const Presence& likely_finisher(std::uint32_t state) const noexcept;
  void supervise_if_due();
  void settle_dead_worker(std::uint32_t index);

  PoolOptions opts_;
  std::map<transport::wire::MsgId, TaskFn> handlers_;
  std::byte* mem_ = nullptr;
  std::size_t mem_size_ = 0;
  std::size_t ring_offset_ = 0, slots_offset_ = 0, stride_ = 0, payload_offset_ = 0;
  std::uint64_t ring_mask_ = 0;
  // Parent-only bookkeeping (INVARIANT3 makes it exact): free slots, each slot's generation, the
  // ring tail and the last head seen.
  std::vector<std::uint32_t> free_slots_;
  std::vector<std::uint32_t> generation_;
  std::uint64_t tail_[2] = {0, 0}, head_seen_[2] = {0, 0};  // per ring (submissions, retries)
  std::uint32_t next_wake_ = 0;  // the worker wake_workers() tries first
  SpinPolicy wait_spin_;
  sys::Deadline next_supervise_{};
  std::vector<pid_t> pids_;
  pid_t parent_ = 0;
  bool stopped_ = false;
  PoolStats stats_;
};

}  // namespace shmkit
