// queue_oneway_64B: one forked producer process sends 64-byte messages to this (consumer) process;
// items_per_second counted at the consumer. Variants:
//   shmkit_queue         transport::Queue in shared memory (push / pop, spin then futex)
//   boost_message_queue  boost::interprocess::message_queue (capacity 1024 messages of 64 bytes)
//   unix_seqpacket       a SOCK_SEQPACKET socketpair, one 64-byte packet per message
//   spin_ring_limit      a bare single-producer single-consumer ring of 1024 slots spun on
// Goal: shmkit_queue >= 5 x boost_message_queue.
//
// A run of n iterations moves n messages: the producer is forked before the timed region, sends
// exactly n and exits; the consumer checks every message's sequence number. Every variant moves
// one message per send/receive call, with 1024 messages of capacity, and blocks (or spins) the
// way its library does when full or empty.
//
// Placement. Nothing pins the two processes, and where the scheduler puts them decides Boost's
// figure more than anything else: with both processes on one core (another engineer's job on the
// other, say) the producer fills the queue and blocks, the consumer drains it, and each message
// costs an uncontended mutex lock/unlock (measured 44 ns, 22.7 M/s under `taskset -c 0`); on two
// cores the processes fight over the one mutex line (112-140 ns, 7-9 M/s under `taskset -c 0,1`).
// That is the 3.5-19 M/s spread seen between runs. So every variant reports the counter
// `same_cpu`: the share of samples (one per 1024 messages) in which the consumer ran on the CPU
// the producer last reported. Compare ratios between runs with similar same_cpu.
#include <benchmark/benchmark.h>
#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>

#include <atomic>
#include <boost/interprocess/ipc/message_queue.hpp>
#include <cstdint>
#include <cstring>
#include <new>
#include <string>

#include "cpu_load.hpp"
#include "partner_process.hpp"
#include "shmkit/sys/proc_control.hpp"
#include "shmkit/sys/syscall.hpp"
#include "shmkit/channels/queue.hpp"

namespace {

namespace sys = shmkit::sys;
namespace tr = shmkit;  // the channel types live in namespace shmkit since the transport split
constexpr std::size_t kMsg = 64;
constexpr std::size_t kSlots = 1024;

struct Message {
  std::uint64_t seq;
  std::byte filler[kMsg - 8];
};
static_assert(sizeof(Message) == kMsg);

// Where the two processes run (see the file comment): the producer stores its CPU every 1024
// messages, the consumer compares it with its own every 1024 messages. relaxed: a sample, not a
// synchronisation; a stale value only blurs the share. Costs a few ns per 1024 messages, alike
// for every variant.
struct PlacementProbe {
  alignas(64) std::atomic<int> producer_cpu{-1};
  alignas(64) std::uint64_t samples = 0;  // consumer-local
  std::uint64_t same = 0;
  void producer_at(std::uint64_t i) {
    if ((i & 1023) == 0) producer_cpu.store(sched_getcpu(), std::memory_order_relaxed);
  }
  void consumer_at(std::uint64_t i) {
    if ((i & 1023) != 512) return;
    ++samples;
    same += sched_getcpu() == producer_cpu.load(std::memory_order_relaxed);
  }
  void report(benchmark::State& state) const {
    state.counters["same_cpu"] = samples == 0 ? 0.0 : static_cast<double>(same) / static_cast<double>(samples);
  }
};

class Probe {
 public:
  Probe() : mem_(sizeof(PlacementProbe)) { p_ = mem_.get() == nullptr ? nullptr : new (mem_.get()) PlacementProbe; }
  PlacementProbe* operator->() const { return p_; }
  bool ok() const { return p_ != nullptr; }

 private:
  shmkit::bench::SharedMap mem_;
  PlacementProbe* p_;
};

using shmkit::bench::fork_partner;
using shmkit::bench::reap_ok;
using shmkit::bench::SharedMap;

// The same capacity as the other variants: 1024 messages (records of 16 + 64 bytes, each
// starting on a cache line).
void bm_shmkit_queue(benchmark::State& state) {
  constexpr std::size_t kRecord = (tr::Queue::kRecordHeader + kMsg + tr::Queue::kRecordAlign - 1) /
                                  tr::Queue::kRecordAlign * tr::Queue::kRecordAlign;
  const std::size_t bytes = tr::Queue::required_bytes(kSlots * kRecord);
  SharedMap mem(bytes);
  if (mem.get() == nullptr) return state.SkipWithError("mmap failed");
  tr::Queue q = tr::Queue::create(mem.get(), bytes, kMsg);
  Probe probe;
  if (!probe.ok()) return state.SkipWithError("mmap failed");
  const std::int64_t n = static_cast<std::int64_t>(state.max_iterations);
  pid_t pid = fork_partner([&] {
    Message m{};
    // The one producer claims its side: no locked instruction per push (queue.hpp).
    if (q.claim_producer() != tr::QueueStatus::ok) return 1;
    for (std::int64_t i = 0; i < n; ++i) {
      m.seq = static_cast<std::uint64_t>(i);
      probe->producer_at(m.seq);
      if (q.push({reinterpret_cast<std::byte*>(&m), sizeof m}).status != tr::QueueStatus::ok) return 1;
    }
    q.release_producer();
    return 0;
  });
  if (pid < 0) return state.SkipWithError("fork failed");
  Message m;
  std::uint64_t expect = 0;
  bool ok = q.claim_consumer() == tr::QueueStatus::ok;  // the one consumer, likewise
  for (auto _ : state) {
    if (!ok) break;
    tr::QueueResult r = q.pop({reinterpret_cast<std::byte*>(&m), sizeof m});
    probe->consumer_at(expect);
    if (r.status != tr::QueueStatus::ok || r.size != kMsg || m.seq != expect++) {
      ok = false;
      break;
    }
  }
  q.release_consumer();
  if (!reap_ok(pid, ok) || !ok) return state.SkipWithError("shmkit queue transfer failed");
  state.SetItemsProcessed(state.iterations());
  probe->report(state);
}

void bm_boost_message_queue(benchmark::State& state) {
  namespace bip = boost::interprocess;
  const std::string name = "shmkit-bench-queue-" + std::to_string(sys::getpid());
  bip::message_queue::remove(name.c_str());
  const std::int64_t n = static_cast<std::int64_t>(state.max_iterations);
  bool ok = true;
  Probe probe;
  if (!probe.ok()) return state.SkipWithError("mmap failed");
  {
    bip::message_queue q(bip::create_only, name.c_str(), kSlots, kMsg);
    pid_t pid = fork_partner([&] {
      Message m{};
      for (std::int64_t i = 0; i < n; ++i) {
        m.seq = static_cast<std::uint64_t>(i);
        probe->producer_at(m.seq);
        q.send(&m, sizeof m, 0);
      }
      return 0;
    });
    if (pid < 0) {
      ok = false;
    } else {
      Message m;
      std::uint64_t expect = 0;
      std::size_t got;
      unsigned prio;
      for (auto _ : state) {
        q.receive(&m, sizeof m, got, prio);
        probe->consumer_at(expect);
        if (got != kMsg || m.seq != expect++) {
          ok = false;
          break;
        }
      }
      ok = reap_ok(pid, ok) && ok;
    }
  }
  bip::message_queue::remove(name.c_str());
  if (!ok) return state.SkipWithError("boost message_queue transfer failed");
  state.SetItemsProcessed(state.iterations());
  probe->report(state);
}

void bm_unix_seqpacket(benchmark::State& state) {
  int sv[2];
  Probe probe;
  if (!probe.ok()) return state.SkipWithError("mmap failed");
  if (sys::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) return state.SkipWithError("socketpair");
  const std::int64_t n = static_cast<std::int64_t>(state.max_iterations);
  pid_t pid = fork_partner([&] {
    (void)sys::close(sv[0]);
    Message m{};
    for (std::int64_t i = 0; i < n; ++i) {
      m.seq = static_cast<std::uint64_t>(i);
      probe->producer_at(m.seq);
      if (sys::write(sv[1], &m, sizeof m) != static_cast<ssize_t>(sizeof m)) return 1;
    }
    return 0;
  });
  if (pid < 0) return state.SkipWithError("fork failed");
  (void)sys::close(sv[1]);
  Message m;
  std::uint64_t expect = 0;
  bool ok = true;
  for (auto _ : state) {
    bool got = sys::read(sv[0], &m, sizeof m) == static_cast<ssize_t>(sizeof m);
    probe->consumer_at(expect);
    if (!got || m.seq != expect++) {
      ok = false;
      break;
    }
  }
  (void)sys::close(sv[0]);
  if (!reap_ok(pid, ok) || !ok) return state.SkipWithError("seqpacket transfer failed");
  state.SetItemsProcessed(state.iterations());
  probe->report(state);
}

// The physical limit: a single-producer single-consumer ring with no locks, no sleeping, no
// variable sizes: head and tail counters on their own cache lines, slots of 64 bytes.
struct SpinRing {
  alignas(64) std::atomic<std::uint64_t> head{0};
  alignas(64) std::atomic<std::uint64_t> tail{0};
  alignas(64) Message slots[kSlots];
};

void bm_spin_ring_limit(benchmark::State& state) {
  SharedMap mem(sizeof(SpinRing));
  if (mem.get() == nullptr) return state.SkipWithError("mmap failed");
  auto* ring = new (mem.get()) SpinRing;
  Probe probe;
  if (!probe.ok()) return state.SkipWithError("mmap failed");
  const std::int64_t n = static_cast<std::int64_t>(state.max_iterations);
  pid_t pid = fork_partner([&] {
    std::uint64_t head_seen = 0;
    for (std::uint64_t i = 0; i < static_cast<std::uint64_t>(n); ++i) {
      probe->producer_at(i);
      while (i - head_seen >= kSlots) {
        head_seen = ring->head.load(std::memory_order_acquire);
        sys::cpu_relax();
      }
      ring->slots[i % kSlots].seq = i;
      ring->tail.store(i + 1, std::memory_order_release);
    }
    return 0;
  });
  if (pid < 0) return state.SkipWithError("fork failed");
  std::uint64_t head = 0, tail_seen = 0;
  bool ok = true;
  for (auto _ : state) {
    while (head == tail_seen) {
      tail_seen = ring->tail.load(std::memory_order_acquire);
      if (head == tail_seen) sys::cpu_relax();
    }
    Message m;
    std::memcpy(&m, &ring->slots[head % kSlots], sizeof m);
    ring->head.store(head + 1, std::memory_order_release);
    probe->consumer_at(head);
    if (m.seq != head++) {
      ok = false;
      break;
    }
  }
  if (!reap_ok(pid, ok) || !ok) return state.SkipWithError("spin ring transfer failed");
  state.SetItemsProcessed(state.iterations());
  probe->report(state);
}

}  // namespace

SHMKIT_TWO_PROCESS_BENCHMARK(bm_shmkit_queue, "queue_oneway_64B/shmkit_queue");
SHMKIT_TWO_PROCESS_BENCHMARK(bm_boost_message_queue, "queue_oneway_64B/boost_message_queue");
SHMKIT_TWO_PROCESS_BENCHMARK(bm_unix_seqpacket, "queue_oneway_64B/unix_seqpacket");
SHMKIT_TWO_PROCESS_BENCHMARK(bm_spin_ring_limit, "queue_oneway_64B/spin_ring_limit");
