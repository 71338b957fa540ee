// producer_consumer: several producer processes and several consumer processes exchanging
// messages through one shmkit::transport::Queue that lives in a shared heap.
//
// The parent creates an anonymous segment (a memfd; the forked children inherit the mapping),
// attaches its heap, and allocates there: the queue (a bounded multi-producer multi-consumer ring
// of variable-size messages) and a delivery table with one counter per message. It forks the
// producers, each of which pushes `messages` messages of 16..240 bytes carrying (producer,
// sequence number, length, random bytes, FNV-1a checksum of everything before it), and the
// consumers, which pop until the queue is closed and drained, verify each checksum, and count the
// message in the table. When every producer has exited the parent closes the queue; consumers
// drain what is left and exit. The parent then checks that every message was delivered exactly
// once (each counter == 1) with no checksum failures, prints the throughput, and exits 0 only then.
//
//   shmkit_producer_consumer [producers=3] [consumers=2] [messages per producer=200000]
#include <sys/wait.h>

#include <atomic>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "shmkit/heap/heap.hpp"
#include "shmkit/shm/segment.hpp"
#include "shmkit/sys/error.hpp"
#include "shmkit/sys/proc_control.hpp"
#include "shmkit/channels/queue.hpp"

namespace {

using namespace shmkit;

constexpr std::uint32_t kMaxMessage = 256;

struct Header {
  std::uint32_t producer;
  std::uint32_t seq;
  std::uint32_t length;  // whole message, header and checksum included
  std::uint32_t reserved;
};

std::uint64_t fnv1a(const std::byte* p, std::size_t n) {
  std::uint64_t h = 1469598103934665603ULL;
  for (std::size_t i = 0; i < n; ++i) h = (h ^ std::to_integer<std::uint8_t>(p[i])) * 1099511628211ULL;
  return h;
}

// Shared between all processes (in the segment's heap).
struct Tally {
  std::atomic<std::uint64_t> bad_checksums;
  std::atomic<std::uint64_t> bytes;
};

int producer(Queue q, std::uint32_t id, std::uint32_t messages) {
  std::byte buf[kMaxMessage];
  std::uint64_t rng = 0x9e3779b97f4a7c15ULL * (id + 1);
  for (std::uint32_t s = 0; s < messages; ++s) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    std::uint32_t len = 16 + 8 + static_cast<std::uint32_t>(rng % (kMaxMessage - 16 - 8 - 16 + 1));
    Header h{id, s, len, 0};
    std::memcpy(buf, &h, sizeof h);
    for (std::uint32_t i = sizeof h; i < len - 8; ++i) buf[i] = static_cast<std::byte>((rng >> (i % 56)) + i);
    std::uint64_t sum = fnv1a(buf, len - 8);
    std::memcpy(buf + len - 8, &sum, 8);
    QueueResult r = q.push({buf, len}, sys::Clock::now() + std::chrono::seconds(30));
    if (r.status != QueueStatus::ok) {
      std::fprintf(stderr, "producer %u: push failed: %s\n", id, to_string(r.status));
      return 1;
    }
  }
  return 0;
}

int consumer(Queue q, std::atomic<std::uint8_t>* seen, std::uint32_t producers, std::uint32_t messages,
             Tally& tally) {
  std::byte buf[kMaxMessage];
  std::uint64_t bytes = 0;
  for (;;) {
    QueueResult r = q.pop(buf, sys::Clock::now() + std::chrono::seconds(30));
    if (r.status == QueueStatus::closed) break;  // closed and drained: the end
    if (r.status != QueueStatus::ok) {
      std::fprintf(stderr, "consumer: pop failed: %s\n", to_string(r.status));
      return 1;
    }
    Header h;
    std::memcpy(&h, buf, sizeof h);
    std::uint64_t sum;
    if (r.size < sizeof h + 8 || h.length != r.size || h.producer >= producers || h.seq >= messages ||
        (std::memcpy(&sum, buf + r.size - 8, 8), sum != fnv1a(buf, r.size - 8))) {
      tally.bad_checksums.fetch_add(1, std::memory_order_relaxed);
      continue;
    }
    // relaxed: the parent reads the counters after reaping every consumer (waitpid orders it).
    seen[std::size_t{h.producer} * messages + h.seq].fetch_add(1, std::memory_order_relaxed);
    bytes += r.size;
  }
  tally.bytes.fetch_add(bytes, std::memory_order_relaxed);
  return 0;
}

std::uint32_t arg(int argc, char** argv, int i, std::uint32_t dflt) {
  return argc > i ? static_cast<std::uint32_t>(std::strtoul(argv[i], nullptr, 10)) : dflt;
}

}  // namespace

int main(int argc, char** argv) {
  const std::uint32_t producers = arg(argc, argv, 1, 3), consumers = arg(argc, argv, 2, 2);
  const std::uint32_t messages = arg(argc, argv, 3, 200000);
  if (producers == 0 || consumers == 0 || producers > 64 || consumers > 64 || messages == 0) {
    std::fprintf(stderr, "usage: %s [producers 1..64] [consumers 1..64] [messages per producer]\n", argv[0]);
    return 2;
  }
  try {
    Segment seg = Segment::create_anonymous(std::size_t{64} << 20);
    Heap& heap = Heap::attach(seg);
    const std::size_t qbytes = Queue::required_bytes(64 * 1024);
    void* qmem = heap.allocate(qbytes, 64);
    const std::size_t n = std::size_t{producers} * messages;
    auto* seen = static_cast<std::atomic<std::uint8_t>*>(heap.allocate(n));
    auto* tally = static_cast<Tally*>(heap.allocate(sizeof(Tally), 64));
    if (qmem == nullptr || seen == nullptr || tally == nullptr) {
      std::fprintf(stderr, "out of shared memory for %zu messages\n", n);
      return 1;
    }
    std::memset(static_cast<void*>(seen), 0, n);
    new (tally) Tally{};
    Queue q = Queue::create(qmem, qbytes, kMaxMessage);

    auto t0 = std::chrono::steady_clock::now();
    std::vector<pid_t> prod, cons;
    auto fork_child = [&](auto body) {
      std::fflush(nullptr);
      pid_t pid = sys::fork();
      if (pid < 0) throw_errno("fork", -pid);
      if (pid == 0) sys::exit_now(body());
      return pid;
    };
    for (std::uint32_t c = 0; c < consumers; ++c)
      cons.push_back(fork_child([&] { return consumer(q, seen, producers, messages, *tally); }));
    for (std::uint32_t p = 0; p < producers; ++p)
      prod.push_back(fork_child([&, p] { return producer(q, p, messages); }));
    bool ok = true;
    for (pid_t pid : prod) {
      int st = 0;
      ok &= sys::waitpid(pid, &st, 0) == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0;
    }
    q.close();  // consumers drain what is left, then see the end
    for (pid_t pid : cons) {
      int st = 0;
      ok &= sys::waitpid(pid, &st, 0) == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0;
    }
    double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

    std::uint64_t missing = 0, duplicated = 0;
    for (std::size_t i = 0; i < n; ++i) {
      std::uint8_t c = seen[i].load(std::memory_order_relaxed);
      missing += c == 0;
      duplicated += c > 1;
    }
    const std::uint64_t bad = tally->bad_checksums.load();
    std::printf("%u producers -> %u consumers: %zu messages (24..%u bytes) in %.3f s = %.2f M msg/s, %.1f MB/s\n",
                producers, consumers, n, kMaxMessage - 15, secs, static_cast<double>(n) / secs / 1e6,
                static_cast<double>(tally->bytes.load()) / secs / 1e6);
    std::printf("missing %" PRIu64 ", duplicated %" PRIu64 ", bad checksums %" PRIu64 ", processes ok: %s\n",
                missing, duplicated, bad, ok ? "yes" : "NO");
    const bool exactly_once = ok && missing == 0 && duplicated == 0 && bad == 0 && q.empty();
    std::printf("exactly-once delivery: %s\n", exactly_once ? "OK" : "FAILED");
    (void)heap.deallocate(seen);
    (void)heap.deallocate(tally);
    (void)heap.deallocate(qmem);
    Heap::detach(seg);  // before the segment closes: the heap's per-thread caches live in it
    return exactly_once ? 0 : 1;
  } catch (const Error& e) {
    std::fprintf(stderr, "producer_consumer: %s\n", e.what());
    return 1;
  }
}
