// shmkit_torture --pubsub: the publish/subscribe mode of the crash-torture harness.
//
// One topic ("torture", history 4) in an anonymous segment's heap; forked worker processes:
//   publisher (one incarnation at a time)  loans samples of 64 B .. 64 KiB, fills them with a
//              pattern derived from (incarnation, counter), publishes (deadline 5 s: a dead
//              subscriber must never block it — a timeout is counted as `blocked`); one publish
//              in 256 SIGKILLs itself inside publish (pubsub_detail::test_kill_point 1-3), one take
//              in 1024 inside take (point 4), so the repair paths run in every run;
//   2 block_publisher subscribers and 2 drop_oldest subscribers (queues of 4; one of each kind
//              prefetches 3): each checks every sample's pattern (else `corrupted`), that topic seq
//              numbers strictly increase within an incarnation (else `duplicated`), and for
//              block_publisher that they are consecutive after the incarnation's first (else `lost`).
// The supervisor SIGKILLs a random worker every ~--kill-interval-ms and starts a replacement, for
// --duration seconds. Then it stops the workers, reclaims the dead (Topic::reclaim, then
// Heap::reclaim_dead), and checks: Topic::verify() and Heap::verify() find nothing, no loan is left,
// live_samples equals the history's samples, and the heap holds exactly the blocks it held before
// the run plus those history samples (else `leaked`). Last line:
//   torture: mode=pubsub kills=N recoveries=N verify_findings=N lost=N duplicated=N corrupted=N leaked=N blocked=N
// exit 0 only when the last six are 0 and kills >= --min-kills.
// Workers are forked (not exec'd) children of the supervisor, with PR_SET_PDEATHSIG = SIGKILL.
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "shmkit/channels/pubsub.hpp"
#include "shmkit/shm/segment.hpp"
#include "shmkit/sys/proc_control.hpp"

namespace shmkit::torture {

namespace {

using namespace std::chrono_literals;

constexpr int kWorkers = 5;  // 0 publisher, 1-2 block_publisher, 3-4 drop_oldest
struct Counters {
  std::atomic<std::uint64_t> received, lost, duplicated, corrupted, blocked, published;
};
struct State {
  std::atomic<std::uint32_t> stop;
  std::atomic<std::uint32_t> incarnation;
  Counters w[kWorkers];
};

std::uint64_t mix(std::uint64_t x) {
  x += 0x9E3779B97F4A7C15ULL;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
  return x ^ (x >> 31);
}
// The payload: [id][size][words mix(id + i)...]
void fill(std::byte* p, std::size_t n, std::uint64_t id) {
  std::memcpy(p, &id, 8);
  std::memcpy(p + 8, &n, 8);
  for (std::size_t i = 16; i + 8 <= n; i += 8) {
    const std::uint64_t v = mix(id + i);
    std::memcpy(p + i, &v, 8);
  }
}
bool check(const std::byte* p, std::size_t n) {
  if (n < 16) return false;
  std::uint64_t id = 0, len = 0;
  std::memcpy(&id, p, 8);
  std::memcpy(&len, p + 8, 8);
  if (len != n) return false;
  for (std::size_t i = 16; i + 8 <= n; i += 8) {
    std::uint64_t v = 0;
    std::memcpy(&v, p + i, 8);
    if (v != mix(id + i)) return false;
  }
  return true;
}

int publisher(Heap& heap, State& st) {
  BytesPublisher pub(heap, "torture");
  const std::uint64_t inc = st.incarnation.fetch_add(1) + 1;
  std::mt19937_64 rng(inc * 7919);
  Counters& c = st.w[0];
  for (std::uint64_t k = 0; st.stop.load() == 0; ++k) {
    const std::size_t n = 64 + (rng() % 4 == 0 ? rng() % 65536 : rng() % 512);
    LoanedBytes l = pub.loan(n & ~std::size_t{7});
    if (!l) {
      std::this_thread::sleep_for(1ms);
      continue;
    }
    fill(l.data(), l.size(), (inc << 32) | k);
    // Random kills rarely land inside the topic's critical sections: now and then this
    // incarnation kills itself inside publish (after disowning, inside the transaction, after the
    // commit), so that the repair paths run in every run.
    if (rng() % 256 == 0) pubsub_detail::test_kill_point = static_cast<int>(1 + rng() % 3);
    const PubSubStatus s = pub.publish(l, Clock::now() + 5s);
    if (s == PubSubStatus::timed_out) c.blocked.fetch_add(1);
    else if (s != PubSubStatus::ok) return 4;
    else c.published.fetch_add(1);
  }
  return 0;
}

int subscriber(Heap& heap, State& st, int w) {
  const bool lossless = w <= 2;
  SubscriberOptions so;
  so.policy = lossless ? BackPressure::block_publisher : BackPressure::drop_oldest;
  so.queue_depth = 4;
  so.prefetch = w % 2 == 0 ? 3 : 1;
  BytesSubscriber sub(heap, "torture", {}, so);
  Counters& c = st.w[w];
  std::mt19937_64 rng(static_cast<std::uint64_t>(::getpid()) * 31 + static_cast<std::uint64_t>(w));
  std::uint64_t last = 0;
  while (st.stop.load() == 0) {
    if (rng() % 1024 == 0) pubsub_detail::test_kill_point = 4;  // inside take's transaction
    SampleBytes s = sub.take(Clock::now() + 100ms);
    if (!s) continue;
    if (!check(s.data(), s.size())) c.corrupted.fetch_add(1);
    if (last != 0 && s.seq() <= last) c.duplicated.fetch_add(1);
    else if (last != 0 && lossless && s.seq() != last + 1) c.lost.fetch_add(s.seq() - last - 1);
    last = s.seq();
    c.received.fetch_add(1);
  }
  return 0;
}

pid_t start(int w, Heap& heap, State& st) {
  const pid_t pid = sys::fork();
  if (pid != 0) return pid;
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  int rc = 2;
  try {
    rc = w == 0 ? publisher(heap, st) : subscriber(heap, st, w);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "pubsub torture worker %d: %s\n", w, e.what());
  }
  ::_exit(rc);
}

}  // namespace

int pubsub_main(double duration_s, std::uint64_t min_kills, std::uint32_t kill_interval_ms, std::uint64_t seed) {
  Segment seg = Segment::create_anonymous(std::size_t{64} << 20, {.capacity = std::size_t{1} << 30});
  Heap& heap = Heap::attach(seg);
  auto* st = static_cast<State*>(::mmap(nullptr, sizeof(State), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0));
  if (st == MAP_FAILED) {
    std::fprintf(stderr, "shmkit_torture --pubsub: mmap failed\n");
    return 2;
  }
  ::new (st) State{};
  Topic topic = Topic::open(heap, "torture", {.max_subscribers = 8, .max_publishers = 2, .history = 4});
  const std::uint64_t base_blocks = heap.stats().blocks_in_use;
  std::vector<pid_t> pids(kWorkers);
  for (int w = 0; w < kWorkers; ++w) pids[w] = start(w, heap, *st);
  std::mt19937_64 rng(seed);
  std::uint64_t kills = 0, failed = 0, self_kills = 0;
  // A worker that is gone: a self-kill at a kill point is restarted and counted; anything else
  // (an exit, another signal) is a failure.
  auto settle = [&](int status) {
    if (WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) ++self_kills;
    else ++failed;
  };
  const auto t_end = Clock::now() + std::chrono::duration<double>(duration_s);
  while (Clock::now() < t_end || kills < min_kills) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1 + rng() % (2 * kill_interval_ms)));
    for (int x = 0; x < kWorkers; ++x) {
      int status = 0;
      if (sys::waitpid(pids[x], &status, WNOHANG) == pids[x]) {
        settle(status);
        pids[x] = start(x, heap, *st);
      }
    }
    const int w = static_cast<int>(rng() % kWorkers);
    (void)sys::kill(pids[w], SIGKILL);
    int status = 0;
    (void)sys::waitpid(pids[w], &status, 0);
    if (!(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL)) ++failed;  // it had exited by itself
    ++kills;
    pids[w] = start(w, heap, *st);
    if (Clock::now() > t_end + std::chrono::seconds(120)) break;
  }
  st->stop.store(1);
  for (pid_t p : pids) {
    int status = 0;
    const auto until = Clock::now() + 10s;
    while (sys::waitpid(p, &status, WNOHANG) == 0 && Clock::now() < until) std::this_thread::sleep_for(5ms);
    if (sys::waitpid(p, &status, WNOHANG) == 0) {  // still running: a hang
      (void)sys::kill(p, SIGKILL);
      (void)sys::waitpid(p, &status, 0);
      ++failed;
    } else if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
      settle(status);
    }
  }
  (void)topic.reclaim();
  (void)heap.reclaim_dead();
  std::vector<std::string> findings = topic.verify();
  for (auto& f : findings) std::printf("topic: %s\n", f.c_str());
  auto hf = heap.verify();
  for (auto& f : hf) std::printf("heap: %s\n", f.message.c_str());
  const TopicStats ts = topic.stats();
  std::uint64_t loans = 0;
  for (auto& p : ts.publishers) loans += p.loans;
  const std::uint64_t blocks = heap.stats().blocks_in_use;
  const std::uint64_t expected = base_blocks + ts.history_count;
  // live_samples below the history's count is an inconsistency verify() reports; count it too.
  const std::uint64_t live_off = ts.live_samples > ts.history_count ? ts.live_samples - ts.history_count
                                                                    : ts.history_count - ts.live_samples;
  const std::uint64_t leaked = live_off + loans + (blocks > expected ? blocks - expected : 0);
  Counters sum{};
  for (auto& c : st->w) {
    sum.received += c.received.load();
    sum.lost += c.lost.load();
    sum.duplicated += c.duplicated.load();
    sum.corrupted += c.corrupted.load();
    sum.blocked += c.blocked.load();
    sum.published += c.published.load();
  }
  const HeapStats hs = heap.stats();
  const std::uint64_t recoveries = ts.reclaimed_publishers + ts.reclaimed_subscribers + hs.repairs + hs.owned_reclaimed;
  std::printf("pubsub: published=%llu received=%llu reclaimed_publishers=%llu reclaimed_subscribers=%llu reclaimed_loans=%llu "
              "heap_repairs=%llu owned_reclaimed=%llu live_samples=%llu history=%llu blocks=%llu/%llu self_kills=%llu workers_failed=%llu\n",
              static_cast<unsigned long long>(sum.published.load()), static_cast<unsigned long long>(sum.received.load()),
              static_cast<unsigned long long>(ts.reclaimed_publishers), static_cast<unsigned long long>(ts.reclaimed_subscribers),
              static_cast<unsigned long long>(ts.reclaimed_loans), static_cast<unsigned long long>(hs.repairs),
              static_cast<unsigned long long>(hs.owned_reclaimed), static_cast<unsigned long long>(ts.live_samples),
              static_cast<unsigned long long>(ts.history_count), static_cast<unsigned long long>(blocks),
              static_cast<unsigned long long>(expected), static_cast<unsigned long long>(self_kills),
              static_cast<unsigned long long>(failed));
  const std::uint64_t vf = findings.size() + hf.size();
  std::printf("torture: mode=pubsub kills=%llu recoveries=%llu verify_findings=%llu lost=%llu duplicated=%llu corrupted=%llu leaked=%llu blocked=%llu\n",
              static_cast<unsigned long long>(kills), static_cast<unsigned long long>(recoveries),
              static_cast<unsigned long long>(vf), static_cast<unsigned long long>(sum.lost.load()),
              static_cast<unsigned long long>(sum.duplicated.load()), static_cast<unsigned long long>(sum.corrupted.load()),
              static_cast<unsigned long long>(leaked), static_cast<unsigned long long>(sum.blocked.load()));
  std::fflush(stdout);
  const bool ok = vf == 0 && sum.lost == 0 && sum.duplicated == 0 && sum.corrupted == 0 && leaked == 0 &&
                  sum.blocked == 0 && failed == 0 && kills >= min_kills;
  ::munmap(st, sizeof(State));
  return ok ? 0 : 1;
}

}  // namespace shmkit::torture
