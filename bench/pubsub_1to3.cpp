// pubsub_1to3 (../shared/BENCHMARKS.md): one publisher process (this one), three forked subscriber
// processes, each sample delivered to all three; one iteration = one sample published, so
// items_per_second is samples/s, and since the publisher waits whenever the slowest subscriber's
// queue is full, that is the slowest subscriber's rate (the last <= 16 samples in flight when the
// loop ends are delivered and checked after the timed loop).
//
//   shmkit_64B / shmkit_1MiB          shmkit::BytesPublisher / BytesSubscriber, zero copy: the
//                                     publisher loans a sample, writes it in place, publishes; each
//                                     subscriber takes a reference to the same block and releases
//                                     it. Subscribers use block_publisher with a queue of 16 and
//                                     take up to 8 queued samples per lock round trip (prefetch).
//   queue_copy_64B / queue_copy_1MiB  the same fan-out from one shmkit::Queue per subscriber
//                                     (16 messages of ring each): the publisher pushes a copy into
//                                     each queue, each subscriber pops (copies) into its buffer.
//   memcpy_1MiB_limit                 one process copying 1 MiB three times (what a copying
//                                     fan-out of 1 MiB costs at least).
//
// What the publisher writes per sample: the frame content itself is produced once, outside the
// measurement, in every variant (a camera's frame is already in memory: in the shmkit variants the
// loaned block is where it would be written, in the queue variants the publisher's own buffer);
// per sample the publisher writes its sequence number into the first and the last 8 bytes, and
// every subscriber checks both (a torn or repeated sample fails the run). So the figures compare
// the cost of delivering a frame to three processes, not of producing it.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>

#include "cpu_load.hpp"
#include "partner_process.hpp"
#include "shmkit/channels/pubsub.hpp"
#include "shmkit/channels/queue.hpp"
#include "shmkit/shm/segment.hpp"

namespace {

using shmkit::bench::fork_partner;
using shmkit::bench::reap_ok;
using shmkit::bench::SharedMap;

constexpr int kSubscribers = 3;
constexpr std::uint32_t kDepth = 16;
constexpr std::size_t k64 = 64, k1MiB = std::size_t{1} << 20;

void stamp(std::byte* p, std::size_t n, std::uint64_t seq) {
  std::memcpy(p, &seq, 8);
  std::memcpy(p + n - 8, &seq, 8);
}
bool stamped(const std::byte* p, std::size_t n, std::uint64_t seq) {
  std::uint64_t a = 0, b = 0;
  std::memcpy(&a, p, 8);
  std::memcpy(&b, p + n - 8, 8);
  return a == seq && b == seq;
}

// Forks the three subscribers (sub(i) is each one's body); returns false when a fork failed.
template <class Body>
bool fork_subscribers(std::vector<pid_t>& pids, Body sub) {
  for (int i = 0; i < kSubscribers; ++i) {
    const pid_t pid = fork_partner([&, i] { return sub(i); });
    if (pid < 0) return false;
    pids.push_back(pid);
  }
  return true;
}
bool reap_all(const std::vector<pid_t>& pids, bool ok) {
  bool all = ok;
  for (pid_t p : pids) all = reap_ok(p, ok) && all;
  return all;
}

void bm_shmkit(benchmark::State& state, std::size_t size) {
  const std::uint64_t n = static_cast<std::uint64_t>(state.max_iterations);
  shmkit::Segment seg = shmkit::Segment::create_anonymous(std::size_t{64} << 20, {.capacity = std::size_t{1} << 30});
  shmkit::Heap& heap = shmkit::Heap::attach(seg);
  shmkit::Topic::open(heap, "frames", {.max_subscribers = kSubscribers, .queue_depth = kDepth, .max_held = 16});
  SharedMap ready_mem(64);
  auto* ready = reinterpret_cast<std::atomic<int>*>(ready_mem.get());
  std::vector<pid_t> pids;
  const bool forked = fork_subscribers(pids, [&](int) {
    shmkit::BytesSubscriber sub(heap, "frames", {},
                                {.policy = shmkit::BackPressure::block_publisher, .queue_depth = kDepth, .prefetch = 8});
    ready->fetch_add(1);
    for (std::uint64_t seq = 1; seq <= n; ++seq) {
      shmkit::SampleBytes s = sub.take();
      if (!s || s.size() != size || !stamped(s.data(), size, seq)) return 1;
    }
    return 0;
  });
  bool ok = forked;
  while (ok && ready->load() < kSubscribers) std::this_thread::yield();
  {
    shmkit::BytesPublisher pub(heap, "frames");
    std::uint64_t seq = 0;
    for (auto _ : state) {
      shmkit::LoanedBytes l = pub.loan(size);
      if (!l) {
        ok = false;
        break;
      }
      stamp(l.data(), size, ++seq);
      if (pub.publish(l) != shmkit::PubSubStatus::ok) {
        ok = false;
        break;
      }
    }
  }
  if (!reap_all(pids, ok) || !ok) return state.SkipWithError("shmkit pubsub fan-out failed");
  state.SetItemsProcessed(state.iterations());
  state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(size));
  shmkit::Heap::detach(seg);
}

void bm_queue_copy(benchmark::State& state, std::size_t size) {
  const std::uint64_t n = static_cast<std::uint64_t>(state.max_iterations);
  const std::size_t record = (shmkit::Queue::kRecordHeader + size + shmkit::Queue::kRecordAlign - 1) /
                             shmkit::Queue::kRecordAlign * shmkit::Queue::kRecordAlign;
  const std::size_t ring = std::max<std::size_t>(kDepth * record, shmkit::Queue::min_ring_bytes(static_cast<std::uint32_t>(size)));
  const std::size_t bytes = shmkit::Queue::required_bytes(ring);
  std::vector<std::unique_ptr<SharedMap>> mems;
  std::vector<shmkit::Queue> queues;
  for (int i = 0; i < kSubscribers; ++i) {
    mems.push_back(std::make_unique<SharedMap>(bytes));
    if (mems.back()->get() == nullptr) return state.SkipWithError("mmap failed");
    queues.push_back(shmkit::Queue::create(mems.back()->get(), bytes, static_cast<std::uint32_t>(size)));
  }
  std::vector<pid_t> pids;
  const bool forked = fork_subscribers(pids, [&](int i) {
    std::vector<std::byte> buf(size);
    for (std::uint64_t seq = 1; seq <= n; ++seq) {
      shmkit::QueueResult r = queues[static_cast<std::size_t>(i)].pop(buf);
      if (r.status != shmkit::QueueStatus::ok || r.size != size || !stamped(buf.data(), size, seq)) return 1;
    }
    return 0;
  });
  bool ok = forked;
  std::vector<std::byte> frame(size, std::byte{0x5a});
  std::uint64_t seq = 0;
  for (auto _ : state) {
    if (!ok) break;
    stamp(frame.data(), size, ++seq);
    for (auto& q : queues)
      if (q.push(frame).status != shmkit::QueueStatus::ok) {
        ok = false;
        break;
      }
  }
  if (!reap_all(pids, ok) || !ok) return state.SkipWithError("queue fan-out failed");
  state.SetItemsProcessed(state.iterations());
  state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(size));
}

void bm_memcpy_limit(benchmark::State& state) {
  std::vector<std::byte> src(k1MiB, std::byte{1});
  std::vector<std::vector<std::byte>> dst(kSubscribers, std::vector<std::byte>(k1MiB));
  for (auto _ : state) {
    for (auto& d : dst) {
      std::memcpy(d.data(), src.data(), k1MiB);
      benchmark::DoNotOptimize(d.data());
    }
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(state.iterations());
  state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(k1MiB));
}

void bm_shmkit_64B(benchmark::State& s) { bm_shmkit(s, k64); }
void bm_shmkit_1MiB(benchmark::State& s) { bm_shmkit(s, k1MiB); }
void bm_queue_copy_64B(benchmark::State& s) { bm_queue_copy(s, k64); }
void bm_queue_copy_1MiB(benchmark::State& s) { bm_queue_copy(s, k1MiB); }

auto kShort = [](benchmark::internal::Benchmark* b) { b->MinTime(0.3); };
SHMKIT_TWO_PROCESS_BENCHMARK_WITH(bm_shmkit_64B, "pubsub_1to3/shmkit_64B", kShort);
SHMKIT_TWO_PROCESS_BENCHMARK_WITH(bm_shmkit_1MiB, "pubsub_1to3/shmkit_1MiB", kShort);
SHMKIT_TWO_PROCESS_BENCHMARK_WITH(bm_queue_copy_64B, "pubsub_1to3/queue_copy_64B", kShort);
SHMKIT_TWO_PROCESS_BENCHMARK_WITH(bm_queue_copy_1MiB, "pubsub_1to3/queue_copy_1MiB", kShort);
SHMKIT_TWO_PROCESS_BENCHMARK_WITH(bm_memcpy_limit, "pubsub_1to3/memcpy_1MiB_limit", kShort);

}  // namespace
