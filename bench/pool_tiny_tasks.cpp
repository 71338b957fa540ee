// Family pool_tiny_tasks (BENCHMARKS.md): 2 worker processes; each task is 64 bytes in and 4 bytes
// out (the sum of the 64 bytes); 64 tasks are kept in flight: one iteration collects the oldest
// task (and checks its sum) and submits a new one. items/s = tasks/s. Variants:
//   shmkit_pool  shmkit::WorkerPool with 2 workers (submit / wait on the oldest handle)
//   pipe_pool    the pool a user writes by hand: 2 forked workers, one pipe in and one pipe out
//                each; task i goes to worker i % 2 (round-robin); a worker reads 64 bytes, writes 4
// Both run idle and `/loaded` (cpu_load.hpp) and report cpu_ns_per_op: CPU time of the parent and
// both workers per task. The 64 tasks still in flight when the timed loop ends are collected (and
// checked) untimed.
#include <benchmark/benchmark.h>

#include <fcntl.h>

#include <array>
#include <cstdint>
#include <cstring>
#include <map>
#include <span>

#include "cpu_load.hpp"
#include "partner_process.hpp"
#include "shmkit/channels/pool.hpp"
#include "shmkit/sys/syscall.hpp"

namespace {

namespace sys = shmkit::sys;
constexpr std::size_t kIn = 64, kOut = 4, kInFlight = 64, kWorkers = 2;
constexpr shmkit::transport::wire::MsgId kSumId = 40;

// Task i's payload: bytes (i + k) * 7, k = 0..63; its expected result is their sum.
void fill_task(std::uint64_t i, std::byte* p) {
  for (std::size_t k = 0; k < kIn; ++k) p[k] = static_cast<std::byte>((i + k) * 7);
}
std::uint32_t sum_bytes(std::span<const std::byte> in) {
  std::uint32_t s = 0;
  for (std::byte b : in) s += std::to_integer<std::uint32_t>(b);
  return s;
}
std::uint32_t expected_sum(std::uint64_t i) {
  std::byte p[kIn];
  fill_task(i, p);
  return sum_bytes(p);
}

// The family's driver, for both variants: fills the pipeline with kInFlight tasks, then each
// iteration collects the oldest and submits the next; drains the pipeline untimed. `next` is the
// next task number to submit (the oldest in flight is next - kInFlight); submit() uses and bumps
// it; collect() checks task next - kInFlight. False when either failed.
template <class Submit, class Collect>
bool keep_in_flight(benchmark::State& state, std::uint64_t& next, Submit submit, Collect collect) {
  bool ok = true;
  for (std::size_t i = 0; i < kInFlight && ok; ++i) ok = submit();
  for (auto _ : state) {
    if (!ok || !collect() || !submit()) {
      ok = false;
      break;
    }
  }
  for (std::size_t i = 0; i < kInFlight && ok; ++i, ++next) ok = collect();
  if (ok) state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
  return ok;
}

// ---- shmkit_pool ---------------------------------------------------------------------------------

void bm_shmkit_pool(benchmark::State& state) {
  std::map<shmkit::transport::wire::MsgId, shmkit::TaskFn> handlers;
  handlers[kSumId] = [](const shmkit::TaskContext&, std::span<const std::byte> in, std::span<std::byte> out,
                        std::size_t& n) {
    const std::uint32_t s = sum_bytes(in);
    std::memcpy(out.data(), &s, kOut);
    n = kOut;
    return 0;
  };
  shmkit::WorkerPool pool({.workers = kWorkers, .max_tasks = kInFlight, .max_payload = kIn, .max_result = kOut},
                          std::move(handlers));
  std::array<shmkit::TaskHandle, kInFlight> handles;
  std::byte payload[kIn];
  std::uint64_t next = 0;  // the next task to submit; the oldest in flight is next - kInFlight
  auto submit = [&] {
    fill_task(next, payload);
    handles[next % kInFlight] = pool.submit(kSumId, payload);
    return handles[next++ % kInFlight].valid();
  };
  auto collect = [&] {
    const std::uint64_t oldest = next - kInFlight;
    shmkit::TaskResult r = pool.wait(handles[oldest % kInFlight]);
    std::uint32_t got = 0;
    if (r.status != shmkit::TaskStatus::done || r.result.size() != kOut) return false;
    std::memcpy(&got, r.result.data(), kOut);
    return got == expected_sum(oldest);
  };
  const bool ok = keep_in_flight(state, next, submit, collect);
  pool.shutdown();  // reaps the workers, so their CPU time is counted (cpu_load.hpp)
  if (!ok) state.SkipWithError("a task failed or returned a wrong sum");
}

// ---- pipe_pool -----------------------------------------------------------------------------------

struct PipeWorker {
  int in = -1, out = -1;  // the parent's ends: it writes tasks to `in`, reads results from `out`
  pid_t pid = -1;
};

void bm_pipe_pool(benchmark::State& state) {
  std::array<PipeWorker, kWorkers> w;
  bool ok = true;
  for (std::size_t k = 0; k < kWorkers && ok; ++k) {
    int to_worker[2], from_worker[2];
    if (sys::pipe2(to_worker, O_CLOEXEC) != 0) {
      ok = false;
      break;
    }
    if (sys::pipe2(from_worker, O_CLOEXEC) != 0) {
      (void)sys::close(to_worker[0]);
      (void)sys::close(to_worker[1]);
      ok = false;
      break;
    }
    w[k].pid = shmkit::bench::fork_partner([&] {
      // Close every parent end (this worker's and the earlier workers'), so EOF arrives.
      for (std::size_t j = 0; j < k; ++j) {
        (void)sys::close(w[j].in);
        (void)sys::close(w[j].out);
      }
      (void)sys::close(to_worker[1]);
      (void)sys::close(from_worker[0]);
      std::byte task[kIn];
      while (shmkit::bench::full_io(to_worker[0], task, kIn, false)) {
        std::uint32_t s = sum_bytes(task);
        if (!shmkit::bench::full_io(from_worker[1], &s, kOut, true)) return 1;
      }
      return 0;  // EOF: the parent closed its end
    });
    (void)sys::close(to_worker[0]);
    (void)sys::close(from_worker[1]);
    w[k].in = to_worker[1];
    w[k].out = from_worker[0];
    if (w[k].pid < 0) ok = false;
  }
  std::byte payload[kIn];
  std::uint64_t next = 0;
  auto submit = [&] {
    fill_task(next, payload);
    return shmkit::bench::full_io(w[next++ % kWorkers].in, payload, kIn, true);
  };
  auto collect = [&] {
    const std::uint64_t oldest = next - kInFlight;
    std::uint32_t got = 0;
    return shmkit::bench::full_io(w[oldest % kWorkers].out, &got, kOut, false) && got == expected_sum(oldest);
  };
  ok = ok && keep_in_flight(state, next, submit, collect);
  for (auto& x : w) {
    if (x.in >= 0) (void)sys::close(x.in);
    if (x.out >= 0) (void)sys::close(x.out);
    if (x.pid > 0 && !shmkit::bench::reap_ok(x.pid, ok)) ok = false;
  }
  if (!ok) state.SkipWithError("pipe pool failed or returned a wrong sum");
}

}  // namespace

SHMKIT_TWO_PROCESS_BENCHMARK(bm_shmkit_pool, "pool_tiny_tasks/shmkit_pool");
SHMKIT_TWO_PROCESS_BENCHMARK(bm_pipe_pool, "pool_tiny_tasks/pipe_pool");
