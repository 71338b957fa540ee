// The two conditions of ../shared/BENCHMARKS.md for every two-process benchmark family, and its
// `cpu_ns_per_op` counter:
//
//   CpuLoad      the "loaded" condition: one CPU-bound process per online CPU
//                (sysconf(_SC_NPROCESSORS_ONLN)), forked at the benchmark's own nice level (fork
//                inherits it), running for the lifetime of the object; the destructor SIGKILLs and
//                reaps every one.
//   CpuMeter     CPU time of the variant's own processes — this process plus every child it reaps
//                (partners, pool workers), never the load — from construction to report().
//   register_two_process(name, fn)
//                registers fn as `name` (idle) and `name/loaded` (fn run inside a CpuLoad), both
//                in real time and both reporting cpu_ns_per_op.
//
// How the counter keeps the load out: CPU time = CLOCK_PROCESS_CPUTIME_ID of this process (all its
// threads) + the growth of getrusage(RUSAGE_CHILDREN) − the CPU time of load processes reaped in
// between. RUSAGE_CHILDREN grows by a child's whole lifetime (and that of the descendants it
// reaped) when the child is reaped, so every partner a variant forks and reaps counts, however it
// is reaped (waitpid in partner_process.hpp, WorkerPool::shutdown, ...). The load processes are
// children too, but CpuLoad reaps them with wait4(), which returns each one's own usage, and adds
// it to a process-wide total of "load CPU reaped" that CpuMeter subtracts — so the figure is right
// whether the load is reaped before or after the meter reports. A load process never reaps
// anything itself, so its wait4 usage is exactly what it added to RUSAGE_CHILDREN.
//
// Contract for a variant `fn`: it reaps every process it forks before it returns (otherwise that
// process's CPU time is missing), and it does not reap children it did not fork (waitpid(-1)).
// The partner's set-up (fork, filling its memory) is part of the figure; variants run long enough
// (≥ 0.5 s) that it is a small fraction of a per-operation cost.
#pragma once

#include <benchmark/benchmark.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <new>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "partner_process.hpp"
#include "shmkit/sys/proc_control.hpp"

namespace shmkit::bench {

inline std::int64_t timeval_ns(const timeval& t) noexcept {
  return static_cast<std::int64_t>(t.tv_sec) * 1'000'000'000 + static_cast<std::int64_t>(t.tv_usec) * 1000;
}
inline std::int64_t rusage_cpu_ns(const rusage& ru) noexcept { return timeval_ns(ru.ru_utime) + timeval_ns(ru.ru_stime); }

// CPU time of load processes reaped so far by this process (CpuLoad's destructor adds to it).
// Only the benchmark's main thread runs CpuLoad and CpuMeter; relaxed would do, the atomic just
// keeps a stray second thread from tearing it.
inline std::atomic<std::int64_t> g_reaped_load_cpu_ns{0};

// The "loaded" condition. ok() is false when a load process could not be started (the variant
// then reports an error rather than an idle figure under a loaded name).
class CpuLoad {
 public:
  CpuLoad() : started_(sizeof(std::atomic<std::uint32_t>)) {
    long cpus = ::sysconf(_SC_NPROCESSORS_ONLN);
    if (cpus < 1 || started_.get() == nullptr) return;
    auto* started = new (started_.get()) std::atomic<std::uint32_t>(0);
    const pid_t parent = sys::getpid();
    std::fflush(nullptr);
    for (long i = 0; i < cpus; ++i) {
      pid_t pid = sys::fork();
      if (pid < 0) return;  // ok() stays false; the destructor stops the ones already running
      if (pid == 0) spin_forever(*started, parent);
      pids_.push_back(pid);
    }
    // Wait (sleeping, so the load gets the CPUs) until every load process runs its loop, so the
    // variant never starts on a machine that is not loaded yet. Bounded: 10 s.
    for (int i = 0; i < 10000 && started->load(std::memory_order_acquire) < pids_.size(); ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    ok_ = started->load(std::memory_order_acquire) == pids_.size();
  }
  ~CpuLoad() {
    for (pid_t pid : pids_) (void)sys::kill(pid, SIGKILL);
    std::int64_t ns = 0;
    for (pid_t pid : pids_) {
      int st = 0;
      rusage ru{};
      pid_t r;
      do r = ::wait4(pid, &st, 0, &ru);
      while (r < 0 && errno == EINTR);
      if (r == pid) ns += rusage_cpu_ns(ru);
    }
    g_reaped_load_cpu_ns.fetch_add(ns, std::memory_order_relaxed);
  }
  CpuLoad(const CpuLoad&) = delete;
  CpuLoad& operator=(const CpuLoad&) = delete;

  bool ok() const noexcept { return ok_; }
  std::size_t processes() const noexcept { return pids_.size(); }

 private:
  [[noreturn]] static void spin_forever(std::atomic<std::uint32_t>& started, pid_t parent) noexcept {
    // Never outlive the benchmark: the signal covers a parent killed from now on, the getppid()
    // check one that died before the prctl.
    if (sys::set_parent_death_signal(SIGKILL) != 0 || sys::getppid() != parent) sys::exit_now(1);
    // release: pairs with the constructor's acquire load (only the count matters).
    started.fetch_add(1, std::memory_order_release);
    std::uint64_t x = 0;
    for (;;) {
      x = x * 6364136223846793005u + 1442695040888963407u;  // pure user-mode work, no system calls
      asm volatile("" : "+r"(x));
    }
  }

  SharedMap started_;  // the count of load processes that reached their loop
  std::vector<pid_t> pids_;
  bool ok_ = false;
};

// CPU time of this process and the children it reaps, without the load (see the file comment).
class CpuMeter {
 public:
  CpuMeter() : start_(now_ns()) {}
  // CPU nanoseconds used since construction.
  std::int64_t used_ns() const noexcept { return now_ns() - start_; }
  // Sets counter cpu_ns_per_op = used_ns() / ops (ops defaults to the iterations run).
  void report(benchmark::State& state, std::int64_t ops = -1) const {
    if (ops < 0) ops = static_cast<std::int64_t>(state.iterations());
    if (ops <= 0) return;
    state.counters["cpu_ns_per_op"] = static_cast<double>(used_ns()) / static_cast<double>(ops);
  }

 private:
  static std::int64_t now_ns() noexcept {
    timespec self{};
    rusage children{};
    // Neither call can fail with these arguments; a zero reading would only understate.
    if (::clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &self) != 0) self = {};
    if (::getrusage(RUSAGE_CHILDREN, &children) != 0) children = {};
    return static_cast<std::int64_t>(self.tv_sec) * 1'000'000'000 + self.tv_nsec + rusage_cpu_ns(children) -
           g_reaped_load_cpu_ns.load(std::memory_order_relaxed);
  }
  std::int64_t start_;
};

// The two registrations of one two-process variant; apply() configures both alike.
struct TwoProcess {
  benchmark::internal::Benchmark* idle;
  benchmark::internal::Benchmark* loaded;
  template <class F>
  const TwoProcess& apply(F&& f) const {
    f(idle);
    f(loaded);
    return *this;
  }
};

// Registers `fn` as `name` and `name/loaded` (UseRealTime on both). Each run measures
// cpu_ns_per_op around fn with a CpuMeter — fn may set the counter itself (for ops that are not
// its iterations); then the wrapper leaves it alone.
inline TwoProcess register_two_process(const std::string& name, std::function<void(benchmark::State&)> fn) {
  auto measured = [fn](benchmark::State& state) {
    CpuMeter meter;
    fn(state);
    if (state.counters.find("cpu_ns_per_op") == state.counters.end()) meter.report(state);
  };
  auto loaded = [measured](benchmark::State& state) {
    CpuLoad load;
    if (!load.ok()) return state.SkipWithError("could not start the CPU load processes");
    measured(state);
  };
  TwoProcess r{benchmark::RegisterBenchmark(name.c_str(), measured), benchmark::RegisterBenchmark((name + "/loaded").c_str(), loaded)};
  r.apply([](benchmark::internal::Benchmark* b) { b->UseRealTime(); });
  return r;
}

}  // namespace shmkit::bench

// At namespace scope in a family's .cpp: SHMKIT_TWO_PROCESS_BENCHMARK(fn, "family/variant");
// optionally followed by `.apply([](auto* b) { b->MinTime(1.0); })` inside the initializer via
// SHMKIT_TWO_PROCESS_BENCHMARK_WITH(fn, "family/variant", configure).
#define SHMKIT_BENCH_CAT2(a, b) a##b
#define SHMKIT_BENCH_CAT(a, b) SHMKIT_BENCH_CAT2(a, b)
#define SHMKIT_TWO_PROCESS_BENCHMARK(fn, name)                                                     \
  [[maybe_unused]] static const ::shmkit::bench::TwoProcess SHMKIT_BENCH_CAT(shmkit_two_process_, \
                                                                            __LINE__) =          \
      ::shmkit::bench::register_two_process(name, fn)
#define SHMKIT_TWO_PROCESS_BENCHMARK_WITH(fn, name, configure)                                     \
  [[maybe_unused]] static const ::shmkit::bench::TwoProcess SHMKIT_BENCH_CAT(shmkit_two_process_, \
                                                                            __LINE__) =          \
      ::shmkit::bench::register_two_process(name, fn).apply(configure)
