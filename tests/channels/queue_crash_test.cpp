// Tests that the Queue survives producers and consumers SIGKILLed at random moments, in the middle
// of push and pop (also while they hold a side claimed: claim_producer / claim_consumer), while
// others keep going: the queue is never wedged, and exactly-once delivery
// holds for every completely pushed message (push returned ok). Consumers pop with a PopReceipt
// into shared memory so that a message handed to a consumer that died before it could log it is
// still accounted for; producers log each push that returned. At the end (after close and drain):
//   * no message is delivered twice;
//   * every push that returned is delivered exactly once;
//   * the one push in flight when a producer incarnation died is delivered at most once;
//   * nothing is delivered that was never pushed, and every checksum holds.
// Then, deterministically, the producer repair paths that random kills only rarely hit: a producer
// process that died holding the producer lock after committing its record but before advancing
// tail (the record is delivered once, after the earlier ones and before later pushes), after
// committing only the pad in front of a wrapped record, and after scribbling uncommitted bytes
// past tail (nothing of it is delivered).
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mman.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <map>
#include <optional>
#include <random>
#include <thread>
#include <vector>

#include "shmkit/locks/lock.hpp"
#include "shmkit/sys/syscall.hpp"
#include "shmkit/channels/queue.hpp"
#include "testing.hpp"

using namespace shmkit;
using namespace std::chrono_literals;
using shmkit::testing::Child;

namespace {

constexpr std::uint32_t kProducers = 2, kConsumers = 2, kPerProducer = 400000;
constexpr std::uint32_t kMaxGen = 1024;
constexpr std::uint32_t kLogMax = kProducers * kPerProducer + 4 * kMaxGen;

struct Msg {
  std::uint32_t role, gen, seq, pad;
  std::uint64_t check;
  std::uint8_t filler[40];
};
std::uint64_t checksum(std::uint32_t r, std::uint32_t g, std::uint32_t s) {
  return (std::uint64_t{r} << 48) ^ (std::uint64_t{g} << 24) ^ s ^ 0xa5a5a5a5deadbeefULL;
}

struct ProducerRole {
  std::atomic<std::uint32_t> gens;             // incarnations started
  std::atomic<std::uint32_t> done[kMaxGen];    // pushes that returned ok, per incarnation
};
struct LogEntry {
  std::uint64_t pos;
  std::uint32_t role_gen;  // role << 16 | gen
  std::uint32_t seq;
};
struct ConsumerRole {
  PopReceipt receipt;
  Msg out;  // the pop's destination, in shared memory
  std::atomic<std::uint32_t> len;
  LogEntry log[kLogMax];
};
struct Shared {
  std::atomic<bool> stop;          // producers stop pushing (the kill phase is over)
  std::atomic<std::uint32_t> bad;  // messages whose checksum or fields were wrong
  ProducerRole producers[kProducers];
  ConsumerRole consumers[kConsumers];
};

using shmkit::testing::SharedMem;

int run_producer(Queue q, ProducerRole& role, std::uint32_t r, const std::atomic<bool>& stop, bool claim) {
  std::uint32_t g = role.gens.fetch_add(1);
  if (g >= kMaxGen) return 5;
  // A claimant keeps the producer lock from here to its exit or death (queue.hpp, "One producer").
  if (claim && q.claim_producer(sys::Clock::now() + 20s) != QueueStatus::ok) return 7;
  auto total = [&] {
    std::uint32_t t = 0;
    for (std::uint32_t i = 0; i <= g; ++i) t += role.done[i].load();
    return t;
  };
  for (std::uint32_t s = 0; total() < kPerProducer && !stop.load(); ++s) {
    Msg m{r, g, s, 0, checksum(r, g, s), {}};
    QueueResult res = q.push({reinterpret_cast<std::byte*>(&m), sizeof m}, sys::Clock::now() + 20s);
    if (res.status != QueueStatus::ok) return 3;
    role.done[g].store(s + 1);  // the push returned: this message is "completely pushed"
    // Paced so the producers are still running when the kill phase ends (and the queue is
    // sometimes empty, sometimes full).
    if (s % 16 == 15) std::this_thread::sleep_for(std::chrono::microseconds(s % 512 < 256 ? 100 : 10));
  }
  return 0;
}

void append(ConsumerRole& role, std::uint64_t pos, std::atomic<std::uint32_t>& bad) {
  std::uint32_t n = role.len.load();
  const Msg& m = role.out;
  if (m.role >= kProducers || m.gen >= kMaxGen || m.check != checksum(m.role, m.gen, m.seq)) bad.fetch_add(1);
  role.log[n] = LogEntry{pos, m.role << 16 | m.gen, m.seq};
  role.len.store(n + 1);
}

int run_consumer(Queue q, ConsumerRole& role, std::atomic<std::uint32_t>& bad, bool claim) {
  if (claim && q.claim_consumer(sys::Clock::now() + 20s) != QueueStatus::ok) return 7;
  // Recovery: a previous incarnation may have died after its pop committed (the receipt names the
  // message, and `out` holds it) but before it logged the message.
  std::uint64_t rp = role.receipt.pos.load();
  std::uint32_t n = role.len.load();
  std::uint64_t last = n == 0 ? 0 : role.log[n - 1].pos;
  if (rp != 0 && rp != last) append(role, rp, bad);
  for (;;) {
    if (role.len.load() >= kLogMax) return 6;
    QueueResult res = q.pop({reinterpret_cast<std::byte*>(&role.out), sizeof(Msg)}, sys::Clock::now() + 20s,
                            &role.receipt);
    if (res.status == QueueStatus::closed) return 0;
    if (res.status != QueueStatus::ok || res.size != sizeof(Msg)) return 4;
    append(role, res.pos, bad);
  }
}

// claims: producer 0 and consumer 0 claim their side for their whole life (the one-producer /
// one-consumer path without a locked instruction per message); the others wait for the lock.
void random_kills_keep_exactly_once(bool claims) {
  SharedMem qmem(Queue::required_bytes(4096));
  SharedMem smem(sizeof(Shared));
  auto* sh = new (smem.base) Shared{};
  std::span<std::byte> region(smem.base, smem.size);
  Queue q = Queue::create(qmem.base, qmem.size, sizeof(Msg), region);

  auto spawn = [&](std::uint32_t who) {
    return Child([&, who] {
      Queue mine = Queue::attach(qmem.base, qmem.size, region);
      mine.set_spin(std::chrono::microseconds(2));
      if (who < kProducers) return run_producer(mine, sh->producers[who], who, sh->stop, claims && who == 0);
      return run_consumer(mine, sh->consumers[who - kProducers], sh->bad, claims && who == kProducers);
    });
  };
  std::vector<std::optional<Child>> kids(kProducers + kConsumers);
  for (std::uint32_t i = 0; i < kProducers + kConsumers; ++i) kids[i].emplace(spawn(i));

  std::mt19937 rng(777);
  int kills = 0;
  auto end = sys::Clock::now() + 3s;
  while (sys::Clock::now() < end) {
    std::this_thread::sleep_for(std::chrono::microseconds(500 + rng() % 4000));
    std::uint32_t who = rng() % (kProducers + kConsumers);
    kids[who]->kill(SIGKILL);
    int st = kids[who]->wait(5s);
    ASSERT_TRUE(st == -SIGKILL || st == 0) << "process " << who << " ended with " << st;
    if (st == -SIGKILL) ++kills;
    // A producer that finished stays finished; everyone else is replaced.
    kids[who].reset();
    kids[who].emplace(spawn(who));
  }
  bool producers_still_running = false;
  for (std::uint32_t r = 0; r < kProducers; ++r) {
    std::uint32_t t = 0;
    for (std::uint32_t g = 0; g < sh->producers[r].gens.load(); ++g) t += sh->producers[r].done[g].load();
    producers_still_running |= t < kPerProducer;
  }
  EXPECT_TRUE(producers_still_running) << "the producers finished before the kill phase ended";
  sh->stop.store(true);
  // Let the producers finish (replacing none), then close and let the consumers drain.
  for (std::uint32_t p = 0; p < kProducers; ++p) ASSERT_EQ(kids[p]->wait(30s), 0) << "producer " << p;
  q.close();
  for (std::uint32_t c = 0; c < kConsumers; ++c) ASSERT_EQ(kids[kProducers + c]->wait(30s), 0) << "consumer " << c;
  EXPECT_TRUE(q.empty());

  std::map<std::tuple<std::uint32_t, std::uint32_t, std::uint32_t>, int> delivered;
  std::map<std::uint64_t, int> positions;
  for (auto& c : sh->consumers)
    for (std::uint32_t i = 0; i < c.len.load(); ++i) {
      const LogEntry& e = c.log[i];
      ++delivered[{e.role_gen >> 16, e.role_gen & 0xffff, e.seq}];
      ++positions[e.pos];
    }
  EXPECT_EQ(sh->bad.load(), 0u);
  int dups = 0, lost = 0, phantom = 0, inflight_delivered = 0;
  for (auto& [k, n] : delivered) dups += n > 1;
  for (auto& [p, n] : positions) dups += n > 1;
  std::uint32_t completed = 0;
  for (std::uint32_t r = 0; r < kProducers; ++r) {
    auto& role = sh->producers[r];
    for (std::uint32_t g = 0; g < role.gens.load(); ++g) {
      std::uint32_t done = role.done[g].load();
      completed += done;
      for (std::uint32_t s = 0; s < done; ++s) lost += delivered.count({r, g, s}) == 0;
      inflight_delivered += delivered.count({r, g, done});
    }
  }
  for (auto& [k, n] : delivered) {
    auto [r, g, s] = k;
    if (r >= kProducers || g >= sh->producers[r].gens.load() || s > sh->producers[r].done[g].load()) ++phantom;
  }
  EXPECT_EQ(dups, 0);
  EXPECT_EQ(lost, 0);
  EXPECT_EQ(phantom, 0);
  EXPECT_GE(completed, 10000u) << "the producers hardly ran";
  EXPECT_GE(kills, 50) << "too few kills to mean anything";
  std::printf("queue crash%s: %d kills, %u completed pushes, %zu delivered, %d in-flight pushes delivered\n",
              claims ? " (claimed sides)" : "", kills, completed, delivered.size(), inflight_delivered);
}

TEST(QueueCrash, RandomKillsKeepExactlyOnce) { random_kills_keep_exactly_once(false); }
TEST(QueueCrash, RandomKillsKeepExactlyOnceWithClaimedSides) { random_kills_keep_exactly_once(true); }

// ---- deterministic producer repair --------------------------------------------------------

// The commit word of the record at ring position `pos` (the header's pos field, 8 bytes into the
// 64-aligned record: queue.hpp, INVARIANT3/5).
std::atomic_ref<std::uint64_t> commit_word_at(Queue& q, std::uint64_t pos) {
  QueueControl* c = q.control();
  auto* ring = reinterpret_cast<std::byte*>(c) + c->ring_offset;
  return std::atomic_ref<std::uint64_t>(*reinterpret_cast<std::uint64_t*>(ring + pos % c->capacity + 8));
}

std::vector<std::byte> bytes_of(std::uint32_t len, std::uint8_t fill) {
  return std::vector<std::byte>(len, std::byte{fill});
}

// Pops everything (try_pop) and returns the first byte and length of each message.
std::vector<std::pair<std::uint8_t, std::uint32_t>> drain(Queue& q) {
  std::vector<std::pair<std::uint8_t, std::uint32_t>> got;
  std::vector<std::byte> out(4096);
  for (;;) {
    QueueResult r = q.try_pop(out);
    if (r.status != QueueStatus::ok) {
      EXPECT_EQ(r.status, QueueStatus::would_block);
      return got;
    }
    got.emplace_back(r.size == 0 ? 0 : std::to_integer<std::uint8_t>(out[0]), r.size);
  }
}

// A child process pushes `len` bytes of `fill` for real, then takes the producer lock and undoes
// what happened after its commit as `undo` says (tail back: died before the tail store; also the
// message's commit word cleared: died after committing only the pad), and exits holding the lock.
enum class Undo { tail, tail_and_message_commit, scribble };
void die_mid_push(SharedMem& mem, Undo undo, std::uint32_t len, std::uint8_t fill) {
  Child child([&] {
    Queue q = Queue::attach(mem.base, mem.size);
    QueueControl* c = q.control();
    std::uint64_t t0 = c->tail.load();
    if (undo == Undo::scribble) {
      if (c->producer_lock.acquire() != LockResult::acquired) return 2;
      // Garbage in the whole free part of the ring, but never a word that names its position.
      auto* ring = reinterpret_cast<std::byte*>(c) + c->ring_offset;
      std::uint64_t h = c->head.load();
      for (std::uint64_t p = t0; p < h + c->capacity; ++p) ring[p % c->capacity] = std::byte{0xee};
      return 0;  // exits holding the producer lock
    }
    QueueResult r = q.push(bytes_of(len, fill));
    if (r.status != QueueStatus::ok) return 3;
    if (c->producer_lock.acquire() != LockResult::acquired) return 4;
    c->tail.store(t0);
    if (undo == Undo::tail_and_message_commit) {
      if (r.pos == t0) return 5;  // the scenario needs a pad in front of the message
      commit_word_at(q, r.pos).store(0);
    }
    return 0;  // exits holding the producer lock: the kernel marks it owner-died
  });
  ASSERT_EQ(child.wait(10s), 0);
}

TEST(QueueCrash, ProducerDeadAfterCommitBeforeTailIsDeliveredOnce) {
  SharedMem mem(Queue::required_bytes(4096));
  Queue q = Queue::create(mem.base, mem.size, 1000);
  ASSERT_EQ(q.push(bytes_of(100, 1)).status, QueueStatus::ok);
  die_mid_push(mem, Undo::tail, 200, 2);
  // The committed record is visible to consumers already; the next producer repairs tail first.
  ASSERT_EQ(q.push(bytes_of(300, 3)).status, QueueStatus::ok);
  EXPECT_EQ(drain(q), (std::vector<std::pair<std::uint8_t, std::uint32_t>>{{1, 100}, {2, 200}, {3, 300}}));
  EXPECT_TRUE(q.empty());
  // The same, but the consumer takes the orphaned record before any producer repairs tail.
  die_mid_push(mem, Undo::tail, 50, 4);
  EXPECT_EQ(drain(q), (std::vector<std::pair<std::uint8_t, std::uint32_t>>{{4, 50}}));
  ASSERT_EQ(q.push(bytes_of(60, 5)).status, QueueStatus::ok);
  EXPECT_EQ(drain(q), (std::vector<std::pair<std::uint8_t, std::uint32_t>>{{5, 60}}));
  EXPECT_TRUE(q.empty());
}

TEST(QueueCrash, ProducerDeadAfterPadCommitLosesNothingCompleted) {
  SharedMem mem(Queue::required_bytes(4096));
  Queue q = Queue::create(mem.base, mem.size, 1000);
  const std::uint64_t cap = q.control()->capacity;
  // Moves tail to less than one 1000-byte record (1024 bytes) before the end of the ring, so that
  // the next 1000-byte message needs a pad: one 128-byte record, then 1024-byte ones.
  auto near_the_end = [&](std::uint8_t fill) {
    ASSERT_EQ(q.push(bytes_of(100, fill)).status, QueueStatus::ok);
    while (cap - q.control()->tail.load() % cap >= 1024)
      ASSERT_EQ(q.push(bytes_of(1000, fill)).status, QueueStatus::ok);
    EXPECT_GE(drain(q).size(), 1u);
    ASSERT_NE(q.control()->tail.load() % cap, 0u);
  };
  near_the_end(10);
  die_mid_push(mem, Undo::tail_and_message_commit, 1000, 11);  // pad committed, message not
  ASSERT_EQ(q.push(bytes_of(500, 12)).status, QueueStatus::ok);
  // The dead producer's push never returned: its message is not delivered; the pad is skipped.
  EXPECT_EQ(drain(q), (std::vector<std::pair<std::uint8_t, std::uint32_t>>{{12, 500}}));
  // Pad and message both committed, tail not advanced: the message is delivered once.
  near_the_end(13);
  die_mid_push(mem, Undo::tail, 1000, 14);
  ASSERT_EQ(q.push(bytes_of(8, 15)).status, QueueStatus::ok);
  EXPECT_EQ(drain(q), (std::vector<std::pair<std::uint8_t, std::uint32_t>>{{14, 1000}, {15, 8}}));
  EXPECT_TRUE(q.empty());
}

TEST(QueueCrash, UncommittedBytesOfADeadProducerAreNeverDelivered) {
  SharedMem mem(Queue::required_bytes(4096));
  Queue q = Queue::create(mem.base, mem.size, 1000);
  ASSERT_EQ(q.push(bytes_of(70, 1)).status, QueueStatus::ok);
  die_mid_push(mem, Undo::scribble, 0, 0);
  EXPECT_EQ(drain(q), (std::vector<std::pair<std::uint8_t, std::uint32_t>>{{1, 70}}));
  for (std::uint8_t i = 2; i < 40; ++i) {
    ASSERT_EQ(q.push(bytes_of(17u * i, i)).status, QueueStatus::ok);
    EXPECT_EQ(drain(q), (std::vector<std::pair<std::uint8_t, std::uint32_t>>{{i, 17u * i}}));
  }
}

}  // namespace
