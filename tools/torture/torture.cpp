// shmkit_torture: the crash-torture harness (issue 10, "Proof under fault").
//
// A supervisor process starts worker processes (fork + exec of this program, so every worker is
// a fresh process image that attaches the segments like any user would) that exercise, with data
// whose correctness can be checked:
//   lock       Lock-protected records: an array of words that must all equal the record's
//              sequence number, updated word by word (a torn update is visible) under a journal;
//              an acquirer that gets owner_died rolls the journal back and counts a recovery.
//   heap       allocate_owned blocks of many sizes with contents derived from a seed, free them,
//              keep a registry of live blocks in shared memory; every block is re-checked before
//              it is freed, and the supervisor checks a dead worker's blocks before reclaim_dead().
//   producer   pushes sequence-numbered checksummed messages into a Queue; records the highest
//              sequence number whose push returned ok ("acknowledged").
//   consumer   pops into a slot in shared memory with a PopReceipt and records each message in a
//              bitmap; a consumer killed between the pop and the recording is finished from its
//              slot later, so exactly-once can be checked: lost = acknowledged and never popped,
//              duplicated = popped twice.
//   rpc_server / rpc_client
//              Channel round trips; the reply is a transform of the request plus a checksum.
//   transport  forks its own Agent child exporting a window with known contents and reads random
//              ranges through connect_memory (socket and vm transports, alternately), comparing;
//              it also SIGKILLs its agent at random moments (those kills are counted too).
// The supervisor SIGKILLs a random worker at a random moment and starts a replacement, until the
// duration has passed and at least --min-kills kills happened. Then it stops everyone, drains the
// queue, finishes the receipts of dead consumers, checks the lock records, reclaims the dead's
// heap blocks, runs Heap::verify(), and prints as its LAST line:
//   torture: kills=N recoveries=N verify_findings=N lost=N duplicated=N corrupted=N
// exiting 0 only when the last four are 0, no worker failed unexpectedly, and the supervisor's
// own kills (agents killed by transport workers are counted in kills=, not here) reached
// --min-kills. The lines before it break the figures down.
//
// Usage: shmkit_torture [--duration SECONDS|Nm|Nh] [--workers N] [--min-kills N] [--seed N]
//                       [--kill-interval-ms MS] [--max-seconds S] [--no-kills] [--inject FAULT]
//   --duration     run at least this long (default 10 s), then stop once --min-kills is reached
//   --max-seconds  hard bound on the kill phase (default duration * 4 + 60)
//   --workers      processes besides the supervisor (default 13: one RPC server, the rest
//                  cycling lock, heap, producer, consumer, rpc_client, transport)
//   --kill-interval-ms  mean pause between the supervisor's kills (default 25)
//   --no-kills     the same load without kills (scripts/soak.sh uses it)
//   --inject       lose | duplicate | tear | scribble: a deliberate fault that must be caught
//   --pubsub       the publish/subscribe mode instead (pubsub_torture.cpp: one publisher, four
//                  subscribers on one topic; --duration, --min-kills, --kill-interval-ms, --seed)
// The tables (producer incarnations, consumer slots) are sized from --duration (about 1 KiB of
// the state segment per producer incarnation); a worker that finds them full idles and is counted
// in "exhausted" on the detail line.
//
// Clean-up: both segments are anonymous (memfd), inherited by the workers as descriptors, so
// nothing is left in /dev/shm whatever happens; every worker has PR_SET_PDEATHSIG = SIGKILL (and
// so does every agent child), and the supervisor kills and reaps every worker on every exit path.
//
// Process control (fork, execv, kill, waitpid, prctl) is called directly: shmkit::sys has no
// wrappers for them yet (tests/support/testing.cpp does the same).
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <random>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "shmkit/heap/heap.hpp"
#include "shmkit/locks/lock.hpp"
#include "shmkit/shm/segment.hpp"
#include "shmkit/sys/error.hpp"
#include "shmkit/sys/proc_control.hpp"
#include "shmkit/sys/stream_io.hpp"
#include "shmkit/sys/syscall.hpp"
#include "shmkit/transport/agent.hpp"
#include "shmkit/channels/channel.hpp"
#include "shmkit/transport/connect_memory.hpp"
#include "shmkit/channels/queue.hpp"

namespace {

using namespace shmkit;
using namespace shmkit::transport;
using namespace std::chrono_literals;
using u32 = std::uint32_t;
using u64 = std::uint64_t;

std::uint64_t mix64(std::uint64_t x) noexcept {  // splitmix64 finaliser
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

std::uint64_t hash_bytes(const std::byte* p, std::size_t n, std::uint64_t h = 0x1234) noexcept {
  for (std::size_t i = 0; i < n; ++i) h = mix64(h ^ static_cast<std::uint64_t>(p[i]) ^ (i << 8));
  return h;
}

sys::Deadline after(std::chrono::milliseconds d) { return sys::Clock::now() + d; }

// -- the shared state (in the anonymous "state" segment, at SegmentHeader::kDataOffset) ----------

enum class Role : u32 { lock, heap, producer, consumer, rpc_server, rpc_client, transport, count };
const char* role_name(Role r) {
  static const char* const names[] = {"lock", "heap", "producer", "consumer", "rpc_server", "rpc_client", "transport"};
  return static_cast<u32>(r) < static_cast<u32>(Role::count) ? names[static_cast<u32>(r)] : "?";
}

// All figures are counted by whichever process observes the event. Relaxed everywhere: they are
// statistics, read by the supervisor only after every worker has been reaped (waitpid orders).
struct Counters {
  std::atomic<u64> kills;            // SIGKILLs by the supervisor and by transport workers (agents)
  std::atomic<u64> agent_kills;
  std::atomic<u64> lock_recoveries;  // owner_died repairs of a lock record
  std::atomic<u64> queue_recoveries; // dead consumers' pops finished from their slots
  std::atomic<u64> rpc_recoveries;   // reconnects after the server died
  std::atomic<u64> transport_recoveries;  // reconnects after the agent died
  std::atomic<u64> corrupted;
  std::atomic<u64> duplicated;
  std::atomic<u64> stalls;           // deadlines passed (liveness, not correctness)
  std::atomic<u64> lock_ops, heap_ops, heap_oom, pushed, popped, rpc_calls, reads;
  std::atomic<u64> next_uid;         // producer incarnations
  std::atomic<u64> next_cslot;       // consumer incarnations
  std::atomic<u64> exhausted;        // incarnations that found their tables full and idled
};

constexpr u32 kRecords = 4;
constexpr u32 kRecordWords = 32;
// INVARIANT1 (lock record, whenever its lock is not held and not owner-died):
//   journal_active == 0 and arr[i] == seq for every i.
// While held, the owner writes journal_old = seq, journal_active = 1, arr[0..] = seq + 1,
// seq = seq + 1, journal_active = 0 (each a release store, so the stores stay in this order); an
// acquirer that gets owner_died and finds journal_active == 1 restores every word to journal_old.
struct LockedRecord {
  Lock lock;
  std::atomic<u64> seq;
  std::atomic<u64> journal_old;
  std::atomic<u32> journal_active;
  u32 reserved;
  std::atomic<u64> arr[kRecordWords];
};

constexpr u32 kHeapEntries = 64;
constexpr u32 kMaxWorkers = 64;
// A heap worker's registry entry. INVARIANT2: state == 1 => [off, off+size) is a live block of the
// heap, allocated by the worker of this slot, holding fill(seed) — published with a release store
// after the contents were written, and withdrawn (state = 0) before the block is freed.
struct HeapEntry {
  std::atomic<u32> state;
  u32 reserved;
  std::atomic<u64> off, size, seed;
};
struct HeapSlot {
  HeapEntry e[kHeapEntries];
};

constexpr u32 kMaxMsg = 256;
struct MsgHeader {
  u32 uid, seq, len, reserved;
  u64 sum;  // hash of uid, seq, len and the payload
};
static_assert(sizeof(MsgHeader) == 24);

// A consumer incarnation's slot (never reused). INVARIANT3: receipt.pos != recorded_pos => buf holds
// the message at receipt.pos, popped but not yet recorded; recording == 1 => buf's message is being
// recorded (its bit may or may not be set yet: finishing it must be idempotent).
struct ConsumerSlot {
  PopReceipt receipt;
  std::atomic<u64> recorded_pos;
  std::atomic<u32> recording;
  u32 reserved;
  alignas(16) std::byte buf[kMaxMsg];
};

struct WorkerSlot {
  std::atomic<int> pid;
  std::atomic<u32> ready;  // set by the worker once attached
  std::atomic<u32> busy;   // a hint: 1 while inside an operation worth interrupting (see Busy)
  u32 role;
  u32 index;               // role-specific index (heap slot)
};

struct State {
  static constexpr u64 kMagic = 0x6572757472546b53ULL;  // "SkTrture"
  u64 magic;
  u64 seed;
  u32 max_uids, msgs_per_uid, max_cslots, kills_enabled;
  u32 inject;  // Inject: a deliberate fault, to show that the checks catch it
  u32 reserved2;
  u64 queue_off, queue_bytes, chan_off, chan_bytes, cslot_off, acked_off, bits_off, total;
  std::atomic<u32> stop;
  u32 reserved;
  Counters c;
  WorkerSlot w[kMaxWorkers];
  LockedRecord rec[kRecords];
  HeapSlot heap[kMaxWorkers];
};
static_assert(std::is_standard_layout_v<State> && std::is_standard_layout_v<ConsumerSlot> &&
              std::is_standard_layout_v<LockedRecord> && std::is_standard_layout_v<HeapEntry>);
static_assert(sizeof(ConsumerSlot) % 16 == 0);

// --inject: each worker of the role makes the fault once, at its 100th operation. The run must
// then fail with the matching figure (the suite test checks that it does: checks that cannot fail
// prove nothing).
enum class Inject : u32 { none, lose, duplicate, tear, scribble };

constexpr u32 kEchoId = 100;
constexpr u32 kChanWindows = 8;
constexpr u32 kChanMax = 4096;
constexpr std::size_t kWindowBytes = std::size_t{1} << 20;

u64 align_up(u64 v, u64 a) { return (v + a - 1) / a * a; }

// Views of the state segment's parts, computed from State's recorded offsets (validated once).
struct View {
  Segment* seg = nullptr;
  State* s = nullptr;
  ConsumerSlot* cslots = nullptr;
  std::atomic<u32>* acked = nullptr;  // [max_uids]
  u64* bits = nullptr;                // [max_uids * msgs_per_uid / 64]
  u64 words_per_uid = 0;

  explicit View(Segment& sg) : seg(&sg) {
    s = sg.at<State>(SegmentHeader::kDataOffset);
    if (s == nullptr || s->magic != State::kMagic || s->total > sg.size())
      throw Error(Errc::corrupt, "shmkit_torture: the state segment does not hold a torture state");
    cslots = static_cast<ConsumerSlot*>(sg.pointer_at(s->cslot_off, u64{s->max_cslots + 1} * sizeof(ConsumerSlot)));
    acked = static_cast<std::atomic<u32>*>(sg.pointer_at(s->acked_off, u64{s->max_uids} * 4));
    words_per_uid = s->msgs_per_uid / 64;
    bits = static_cast<u64*>(sg.pointer_at(s->bits_off, s->max_uids * words_per_uid * 8));
    if (cslots == nullptr || acked == nullptr || bits == nullptr)
      throw Error(Errc::corrupt, "shmkit_torture: state segment layout out of bounds");
  }
  Queue queue() const {
    return Queue::attach(seg->base() + s->queue_off, s->queue_bytes, {seg->base(), seg->size()});
  }
  Channel channel() const { return Channel::attach(seg->base() + s->chan_off, s->chan_bytes); }
  bool stopping() const { return s->stop.load(std::memory_order_acquire) != 0; }  // pairs with the supervisor's release
};

// Marks "inside an operation" (a lock held, a heap call, a push/pop and its recording) for the
// supervisor, which aims half of its kills at workers that are busy, so that deaths inside
// critical sections are common rather than rare. relaxed: only a hint; a stale value just makes
// that kill land somewhere else.
std::atomic<u32>* g_busy = nullptr;
struct Busy {
  Busy() { if (g_busy != nullptr) g_busy->store(1, std::memory_order_relaxed); }
  ~Busy() { if (g_busy != nullptr) g_busy->store(0, std::memory_order_relaxed); }
  Busy(const Busy&) = delete;
  Busy& operator=(const Busy&) = delete;
};

void note(const char* fmt, auto... args) {
  std::fprintf(stderr, fmt, args...);
  std::fflush(stderr);
}

// -- lock records -------------------------------------------------------------------------------

void spin_a_little(std::mt19937_64& rng) {
  // Widens the windows in which a kill tears an update (so owner_died repairs really repair).
  if (rng() % 4 == 0)
    for (u32 i = 0, n = static_cast<u32>(rng() % 200); i < n; ++i) locks_detail::cpu_relax();
}

// Precondition: the caller holds r.lock. Returns the number of torn words found (0 when consistent).
u64 check_record(LockedRecord& r) {
  const u64 seq = r.seq.load(std::memory_order_relaxed);  // relaxed: under the lock
  u64 bad = 0;
  for (auto& w : r.arr) bad += w.load(std::memory_order_relaxed) != seq;
  if (r.journal_active.load(std::memory_order_relaxed) != 0) ++bad;
  if (bad != 0) {  // report and make consistent so one fault is counted once
    for (auto& w : r.arr) w.store(seq, std::memory_order_relaxed);
    r.journal_active.store(0, std::memory_order_relaxed);
  }
  return bad;
}

void repair_record(LockedRecord& r) {
  if (r.journal_active.load(std::memory_order_relaxed) != 0) {  // relaxed: we hold the lock
    const u64 old = r.journal_old.load(std::memory_order_relaxed);
    for (auto& w : r.arr) w.store(old, std::memory_order_relaxed);
    r.seq.store(old, std::memory_order_relaxed);
    // release: the restored words are stored before the journal says "not active".
    r.journal_active.store(0, std::memory_order_release);
  }
}

void update_record(LockedRecord& r, std::mt19937_64& rng) {
  const u64 seq = r.seq.load(std::memory_order_relaxed);
  r.journal_old.store(seq, std::memory_order_relaxed);
  // release (each store below): program order of the journal and the words is kept, so a torn
  // update seen after a death always has journal_active == 1 set before it.
  r.journal_active.store(1, std::memory_order_release);
  for (u32 i = 0; i < kRecordWords; ++i) {
    r.arr[i].store(seq + 1, std::memory_order_release);
    if (i % 8 == 7) spin_a_little(rng);
  }
  r.seq.store(seq + 1, std::memory_order_release);
  r.journal_active.store(0, std::memory_order_release);
}

// Acquires r.lock, repairing after a dead owner. False when it could not be acquired.
bool acquire_record(View& v, LockedRecord& r, sys::Deadline deadline) {
  LockResult lr = r.lock.acquire(deadline);
  if (lr == LockResult::owner_died) {
    repair_record(r);
    v.s->c.lock_recoveries.fetch_add(1, std::memory_order_relaxed);
    r.lock.mark_consistent();
  } else if (lr != LockResult::acquired) {
    if (lr == LockResult::timed_out) {
      note("torture: lock record: acquire timed out (2 s)\n");
      v.s->c.stalls.fetch_add(1, std::memory_order_relaxed);
    } else {
      note("torture: lock record acquire: %s\n", std::string(to_string(lr)).c_str());
      v.s->c.corrupted.fetch_add(1, std::memory_order_relaxed);
    }
    return false;
  }
  if (u64 bad = check_record(r); bad != 0) {
    note("torture: lock record torn: %llu words\n", static_cast<unsigned long long>(bad));
    v.s->c.corrupted.fetch_add(1, std::memory_order_relaxed);
  }
  return true;
}

int run_lock(View& v, std::mt19937_64& rng) {
  for (u64 n = 1; !v.stopping(); ++n) {
    LockedRecord& r = v.s->rec[rng() % kRecords];
    Busy busy;
    if (!acquire_record(v, r, after(2000ms))) continue;
    update_record(r, rng);
    if (n == 100 && static_cast<Inject>(v.s->inject) == Inject::tear)
      r.arr[kRecordWords / 2].store(r.seq.load(std::memory_order_relaxed) + 7, std::memory_order_relaxed);
    r.lock.unlock();
    v.s->c.lock_ops.fetch_add(1, std::memory_order_relaxed);
  }
  return 0;
}

// -- heap ---------------------------------------------------------------------------------------

void fill_block(std::byte* p, u64 size, u64 seed) {
  for (u64 i = 0; i + 8 <= size; i += 8) {
    const u64 w = mix64(seed + i);
    std::memcpy(p + i, &w, 8);
  }
}
bool check_block(const std::byte* p, u64 size, u64 seed) {
  for (u64 i = 0; i + 8 <= size; i += 8) {
    u64 w;
    std::memcpy(&w, p + i, 8);
    if (w != mix64(seed + i)) return false;
  }
  return true;
}

// Checks a published entry's block (in the heap segment `hs`); false when it was damaged.
bool check_entry(const Segment& hs, const HeapEntry& e) {
  const u64 off = e.off.load(std::memory_order_relaxed), size = e.size.load(std::memory_order_relaxed);
  const auto* p = static_cast<const std::byte*>(hs.pointer_at(off, size));
  return p != nullptr && check_block(p, size, e.seed.load(std::memory_order_relaxed) ^ off);
}

u64 pick_size(std::mt19937_64& rng) {
  const u64 r = rng() % 100;
  if (r < 70) return 8 * (1 + rng() % 128);        // small: thread caches and central lists
  if (r < 97) return 8 * (129 + rng() % 4000);     // medium: the arena
  return 8 * (4096 + rng() % 32768);               // large (up to 288 KiB)
}

int run_heap(View& v, Segment& hs, u32 slot, std::mt19937_64& rng) {
  Heap& heap = Heap::attach(hs);
  HeapSlot& reg = v.s->heap[slot];
  auto corrupt = [&](const char* what, u64 off) {
    note("torture: heap slot %u: %s at offset %llu\n", slot, what, static_cast<unsigned long long>(off));
    v.s->c.corrupted.fetch_add(1, std::memory_order_relaxed);
  };
  auto release = [&](HeapEntry& e) {
    const u64 off = e.off.load(std::memory_order_relaxed);
    if (!check_entry(hs, e)) corrupt("block contents changed", off);
    e.state.store(0, std::memory_order_release);  // withdrawn before the free (INVARIANT2)
    if (HeapStatus st = heap.deallocate(hs.pointer_at(off)); st != HeapStatus::ok) corrupt(to_string(st), off);
  };
  u64 n = 0;
  while (!v.stopping()) {
    HeapEntry& e = reg.e[rng() % kHeapEntries];
    Busy busy;
    if (e.state.load(std::memory_order_acquire) == 1) {
      if (rng() % 2 == 0) release(e);
      else if (!check_entry(hs, e)) corrupt("block contents changed", e.off.load(std::memory_order_relaxed));
    } else {
      const u64 size = pick_size(rng);
      void* p = heap.allocate_owned(size);
      if (p == nullptr) {
        v.s->c.heap_oom.fetch_add(1, std::memory_order_relaxed);
        continue;
      }
      if (heap.usable_size(p) < size) corrupt("usable_size smaller than asked", hs.offset_of(p));
      const u64 off = hs.offset_of(p), seed = rng();
      fill_block(static_cast<std::byte*>(p), size, seed ^ off);
      e.off.store(off, std::memory_order_relaxed);
      e.size.store(size, std::memory_order_relaxed);
      e.seed.store(seed, std::memory_order_relaxed);
      e.state.store(1, std::memory_order_release);  // publishes the three fields above
    }
    v.s->c.heap_ops.fetch_add(1, std::memory_order_relaxed);
    if (n == 99 && static_cast<Inject>(v.s->inject) == Inject::scribble) {
      for (auto& x : reg.e)  // one byte of a live block changes behind the heap's back
        if (x.state.load(std::memory_order_acquire) == 1) {
          static_cast<std::byte*>(hs.pointer_at(x.off.load(std::memory_order_relaxed)))[0] ^= std::byte{1};
          break;
        }
    }
    if (++n % 512 == 0) {  // a full pass: every live block of this worker still intact
      for (auto& x : reg.e)
        if (x.state.load(std::memory_order_acquire) == 1 && !check_entry(hs, x))
          corrupt("block contents changed", x.off.load(std::memory_order_relaxed));
    }
  }
  for (auto& x : reg.e)
    if (x.state.load(std::memory_order_acquire) == 1) release(x);
  Heap::detach(hs);
  return 0;
}

// -- queue --------------------------------------------------------------------------------------

u64 msg_sum(const MsgHeader& h, const std::byte* payload) {
  return hash_bytes(payload, h.len, mix64((u64{h.uid} << 32 | h.seq) ^ (u64{h.len} << 17)));
}

int run_producer(View& v, std::mt19937_64& rng) {
  Queue q = v.queue();
  const u64 uid = v.s->c.next_uid.fetch_add(1, std::memory_order_relaxed);
  if (uid >= v.s->max_uids) {
    v.s->c.exhausted.fetch_add(1, std::memory_order_relaxed);
    while (!v.stopping()) std::this_thread::sleep_for(20ms);
    return 0;
  }
  std::byte msg[kMaxMsg];
  for (u32 seq = 1; seq <= v.s->msgs_per_uid && !v.stopping(); ++seq) {
    MsgHeader h{static_cast<u32>(uid), seq, static_cast<u32>(rng() % (kMaxMsg - sizeof(MsgHeader) + 1)), 0, 0};
    std::byte* payload = msg + sizeof h;
    for (u32 i = 0; i < h.len; ++i) payload[i] = static_cast<std::byte>(mix64(uid * 7919 + seq * 31 + i));
    h.sum = msg_sum(h, payload);
    std::memcpy(msg, &h, sizeof h);
    for (;;) {
      Busy busy;
      QueueResult r = q.push({msg, sizeof h + h.len}, after(100ms));
      if (r.status == QueueStatus::ok) {
        // release: a reader of `acked` (the supervisor, after reaping) sees the push completed.
        v.acked[uid].store(seq, std::memory_order_release);
        v.s->c.pushed.fetch_add(1, std::memory_order_relaxed);
        break;
      }
      if (r.status == QueueStatus::timed_out || r.status == QueueStatus::would_block) {
        if (v.stopping()) return 0;
        continue;
      }
      note("torture: push: %s\n", to_string(r.status));
      v.s->c.corrupted.fetch_add(1, std::memory_order_relaxed);
      return 5;
    }
  }
  return 0;  // this incarnation's sequence space is used up: the supervisor starts a new producer
}

// Records the message in slot.buf (popped at `pos`). replay: finishing an interrupted recording,
// whose bit may already be set by the dead consumer itself (INVARIANT3).
void record_message(View& v, ConsumerSlot& slot, u64 pos, bool replay) {
  MsgHeader h;
  std::memcpy(&h, slot.buf, sizeof h);
  const bool sane = h.len <= kMaxMsg - sizeof h && h.uid < v.s->max_uids && h.seq >= 1 && h.seq <= v.s->msgs_per_uid;
  if (!sane || msg_sum(h, slot.buf + sizeof h) != h.sum) {
    note("torture: message at pos %llu corrupted (uid %u seq %u len %u)\n", static_cast<unsigned long long>(pos),
         h.uid, h.seq, h.len);
    v.s->c.corrupted.fetch_add(1, std::memory_order_relaxed);
  } else {
    // release: `recording` is visible before the bit (a death in between is replayed, INVARIANT3).
    if (!replay) slot.recording.store(1, std::memory_order_release);
    const u64 mask = u64{1} << ((h.seq - 1) % 64);
    const u64 old = std::atomic_ref<u64>(v.bits[h.uid * v.words_per_uid + (h.seq - 1) / 64])
                        .fetch_or(mask, std::memory_order_acq_rel);
    if ((old & mask) != 0 && !replay) {
      note("torture: message uid %u seq %u delivered twice (pos %llu)\n", h.uid, h.seq,
           static_cast<unsigned long long>(pos));
      v.s->c.duplicated.fetch_add(1, std::memory_order_relaxed);
    }
  }
  slot.recorded_pos.store(pos, std::memory_order_release);
  slot.recording.store(0, std::memory_order_release);
}

// Pops until stop (or, when drain, until the queue is empty). Returns 0, or 5 on a queue failure.
int consume(View& v, ConsumerSlot& slot, bool drain) {
  Queue q = v.queue();
  u64 n = drain ? 2000 : 0;  // pops (the supervisor's drain makes no injected faults)
  for (;;) {
    if (!drain && v.stopping()) return 0;
    Busy busy;
    QueueResult r = drain ? q.try_pop({slot.buf, kMaxMsg}, &slot.receipt)
                          : q.pop({slot.buf, kMaxMsg}, after(100ms), &slot.receipt);
    if (r.status == QueueStatus::ok) {
      const auto inject = static_cast<Inject>(v.s->inject);
      if (++n == 100 && inject == Inject::lose) {
        slot.recorded_pos.store(r.pos, std::memory_order_release);  // "popped", never recorded
        continue;
      }
      record_message(v, slot, r.pos, false);
      if (n == 100 && inject == Inject::duplicate) record_message(v, slot, r.pos, false);
      v.s->c.popped.fetch_add(1, std::memory_order_relaxed);
      continue;
    }
    if (r.status == QueueStatus::timed_out) continue;
    if (r.status == QueueStatus::would_block && drain) {
      if (q.empty()) return 0;
      continue;  // the lock is busy (a dead owner being repaired, or a stray consumer)
    }
    note("torture: pop: %s\n", to_string(r.status));
    v.s->c.corrupted.fetch_add(1, std::memory_order_relaxed);
    return 5;
  }
}

int run_consumer(View& v) {
  const u64 cs = v.s->c.next_cslot.fetch_add(1, std::memory_order_relaxed);
  if (cs >= v.s->max_cslots) {
    v.s->c.exhausted.fetch_add(1, std::memory_order_relaxed);
    while (!v.stopping()) std::this_thread::sleep_for(20ms);
    return 0;
  }
  return consume(v, v.cslots[cs], false);
}

// -- RPC channel --------------------------------------------------------------------------------

int run_rpc_server(View& v) {
  ChannelServer srv(v.channel());
  srv.handle(kEchoId, [](const Request& req, wire::Writer& w) {
    std::byte out[kChanMax];
    const std::size_t n = std::min(req.payload.size(), sizeof out);
    for (std::size_t i = 0; i < n; ++i) out[i] = req.payload[i] ^ std::byte{0xa5};
    w.bytes({out, n});
    w.u64(hash_bytes(req.payload.data(), req.payload.size()));
    return 0;
  });
  srv.start();
  const std::atomic<bool> never{false};
  while (!v.stopping()) srv.serve(never, after(100ms));
  srv.stop();
  return 0;
}

int run_rpc_client(View& v, std::mt19937_64& rng) {
  Channel ch = v.channel();
  bool lost_server = false;
  while (!v.stopping()) {
    ChannelClient cli;
    try {
      cli = ChannelClient::connect(ch, after(500ms));
    } catch (const Error&) {  // no server right now (killed, being replaced) or no free window
      std::this_thread::sleep_for(2ms);
      continue;
    }
    if (lost_server) v.s->c.rpc_recoveries.fetch_add(1, std::memory_order_relaxed);
    lost_server = false;
    std::byte req[1024];
    while (!v.stopping()) {
      const std::size_t len = rng() % (sizeof req + 1);
      const u64 salt = rng();
      for (std::size_t i = 0; i < len; ++i) req[i] = static_cast<std::byte>(mix64(salt + i));
      CallResult r = cli.call(kEchoId, {req, len}, after(2000ms));
      if (r.status == ChannelStatus::ok) {
        bool good = r.reply.size() == len + 8;
        for (std::size_t i = 0; good && i < len; ++i) good = r.reply[i] == (req[i] ^ std::byte{0xa5});
        u64 sum = 0;
        if (good) std::memcpy(&sum, r.reply.data() + len, 8);
        if (!good || sum != hash_bytes(req, len)) {
          note("torture: rpc reply corrupted (len %zu, reply %zu)\n", len, r.reply.size());
          v.s->c.corrupted.fetch_add(1, std::memory_order_relaxed);
        }
        v.s->c.rpc_calls.fetch_add(1, std::memory_order_relaxed);
        continue;
      }
      if (r.status == ChannelStatus::peer_closed) {
        lost_server = true;
        break;
      }
      if (r.status == ChannelStatus::timed_out) {
        note("torture: rpc call timed out (2 s)\n");
        v.s->c.stalls.fetch_add(1, std::memory_order_relaxed);
        continue;
      }
      note("torture: rpc call: %s (errno %d)\n", to_string(r.status), r.error_code);
      v.s->c.corrupted.fetch_add(1, std::memory_order_relaxed);
      break;
    }
  }
  return 0;
}

// -- transport ----------------------------------------------------------------------------------

int run_transport(View& v, std::mt19937_64& rng, u32 index) {
  // The window: a memfd mapped shared, filled once; every agent child (forked) exports it.
  const int mfd = sys::check(sys::memfd_create("shmkit-torture-window", MFD_CLOEXEC), "memfd_create");
  sys::check(sys::ftruncate(mfd, static_cast<off_t>(kWindowBytes)), "ftruncate");
  void* mp = nullptr;
  sys::check(sys::mmap(&mp, nullptr, kWindowBytes, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0), "mmap");
  auto* win = static_cast<std::byte*>(mp);
  fill_block(win, kWindowBytes, 0xfeedULL + index);
  std::vector<std::byte> buf(64 * 1024);
  u64 generation = 0;
  bool agent_was_killed = false;
  while (!v.stopping()) {
    int sv[2];
    sys::check(sys::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), "socketpair");
    const pid_t parent = sys::getpid();
    const pid_t agent_pid = sys::fork();
    if (agent_pid < 0) throw Error(Errc::system, "fork (agent) failed", -agent_pid);
    if (agent_pid == 0) {
      if (sys::set_parent_death_signal(SIGKILL) != 0 || sys::getppid() != parent) sys::exit_now(0);
      (void)sys::close(sv[1]);
      try {
        Agent agent;
        agent.export_window({win, kWindowBytes, false, mfd, 0});
        agent.add_client(sv[0]);
        agent.run(/*until_no_clients=*/true);
      } catch (...) {
        sys::exit_now(3);
      }
      sys::exit_now(0);
    }
    (void)sys::close(sv[0]);
    ConnectOptions opts;
    opts.choice = generation++ % 2 == 0 ? TransportChoice::socket_only : TransportChoice::vm_only;
    opts.socket.io_timeout = 2000ms;
    bool killed = false;
    try {
      Connection c = connect_memory(sv[1], opts);
      sv[1] = -1;  // owned by the transport now
      if (agent_was_killed) v.s->c.transport_recoveries.fetch_add(1, std::memory_order_relaxed);
      agent_was_killed = false;
      const u64 kill_at = v.s->kills_enabled != 0 ? 100 + rng() % 2000 : ~u64{0};
      for (u64 n = 0; !v.stopping(); ++n) {
        if (n == kill_at) {
          (void)sys::kill(agent_pid, SIGKILL);
          // Wait until it is dead (a zombie, not reaped: its pid cannot be reused yet). Its socket
          // was closed before that, so from here every read must fail: a success would be a
          // transport talking to a dead agent (or, after pid reuse, to some other process).
          (void)sys::wait_exited_unreaped(agent_pid);
          killed = true;
          v.s->c.kills.fetch_add(1, std::memory_order_relaxed);
          v.s->c.agent_kills.fetch_add(1, std::memory_order_relaxed);
        }
        const std::size_t len = 1 + rng() % buf.size();
        const std::size_t off = rng() % (kWindowBytes - len + 1);
        std::memset(buf.data(), 0, len);
        const int r = c.transport->read(reinterpret_cast<std::uintptr_t>(win) + off, buf.data(), len);
        if (killed) {
          if (r == 0) {
            note("torture: transport %s read succeeded after its agent died\n", std::string(c.transport->kind()).c_str());
            v.s->c.corrupted.fetch_add(1, std::memory_order_relaxed);
          }
          break;
        }
        if (r != 0) {  // the agent is alive: an error is a failure of the transport
          note("torture: transport %s read failed: %s\n", std::string(c.transport->kind()).c_str(), std::strerror(-r));
          v.s->c.stalls.fetch_add(1, std::memory_order_relaxed);
          break;
        }
        if (std::memcmp(buf.data(), win + off, len) != 0) {
          note("torture: transport %s read returned wrong bytes (off %zu len %zu)\n",
               std::string(c.transport->kind()).c_str(), off, len);
          v.s->c.corrupted.fetch_add(1, std::memory_order_relaxed);
        }
        v.s->c.reads.fetch_add(1, std::memory_order_relaxed);
      }
    } catch (const Error& e) {
      if (!killed) {
        note("torture: transport connect failed: %s\n", e.what());
        v.s->c.stalls.fetch_add(1, std::memory_order_relaxed);
      }
    }
    if (sv[1] >= 0) (void)sys::close(sv[1]);
    if (!killed) (void)sys::kill(agent_pid, SIGKILL);  // a stop, or a failure: the next agent starts clean
    int st = 0;
    (void)sys::waitpid(agent_pid, &st, 0);
    agent_was_killed = killed;
  }
  return 0;
}

// -- worker entry -------------------------------------------------------------------------------

int worker_main(int argc, char** argv) {
  // --worker ROLE SLOT STATE_FD HEAP_FD
  if (argc != 6) return 64;
  const auto role = static_cast<Role>(std::stoul(argv[2]));
  const u32 slot = static_cast<u32>(std::stoul(argv[3]));
  Segment st = Segment::adopt(std::stoi(argv[4]));
  Segment hs = Segment::adopt(std::stoi(argv[5]));
  View v(st);
  if (slot >= kMaxWorkers) return 64;
  std::mt19937_64 rng(mix64(v.s->seed ^ (u64{slot} << 32) ^ static_cast<u64>(sys::getpid())));
  WorkerSlot& me = v.s->w[slot];
  g_busy = &me.busy;
  me.ready.store(1, std::memory_order_release);
  switch (role) {
    case Role::lock: return run_lock(v, rng);
    case Role::heap: return run_heap(v, hs, slot, rng);
    case Role::producer: return run_producer(v, rng);
    case Role::consumer: return run_consumer(v);
    case Role::rpc_server: return run_rpc_server(v);
    case Role::rpc_client: return run_rpc_client(v, rng);
    case Role::transport: return run_transport(v, rng, slot);
    case Role::count: break;
  }
  return 64;
}

// -- supervisor ---------------------------------------------------------------------------------

}  // namespace
namespace shmkit::torture {
int pubsub_main(double duration_s, std::uint64_t min_kills, std::uint32_t kill_interval_ms, std::uint64_t seed);
}  // namespace shmkit::torture
namespace {

struct Options {
  double duration = 10;
  u32 workers = 13;
  u64 min_kills = 0;
  u64 seed = 0;
  double kill_interval_ms = 25;
  bool kills = true;
  double max_seconds = 0;  // 0: duration * 4 + 60
  Inject inject = Inject::none;
  bool pubsub = false;  // --pubsub
};

volatile std::sig_atomic_t g_interrupted = 0;
void on_signal(int) { g_interrupted = 1; }

struct Worker {
  pid_t pid = -1;
  Role role = Role::lock;
};

class Supervisor {
 public:
  Supervisor(const Options& o, Segment& st, Segment& hs, Heap& heap, View& v)
      : o_(o), st_(st), hs_(hs), heap_(heap), v_(v), rng_(o.seed) {}
  ~Supervisor() { kill_all(); }

  void start_all() {
    // The mix: one RPC server, then the other roles in turn (the server is killed like any other).
    static const Role cycle[] = {Role::lock,       Role::heap,     Role::producer, Role::consumer,
                                 Role::rpc_client, Role::transport};
    workers_.resize(o_.workers);
    workers_[0].role = Role::rpc_server;
    for (u32 i = 1; i < o_.workers; ++i) workers_[i].role = cycle[(i - 1) % std::size(cycle)];
    for (u32 i = 0; i < o_.workers; ++i) spawn(i);
  }

  // Kills and replaces until the duration passed and min_kills kills happened (or the time limit).
  void run() {
    using Sec = std::chrono::duration<double>;
    const auto t0 = std::chrono::steady_clock::now();
    const double limit = o_.max_seconds > 0 ? o_.max_seconds : o_.duration * 4 + 60;
    for (;;) {
      const double el = Sec(std::chrono::steady_clock::now() - t0).count();
      const bool enough = el >= o_.duration && (!o_.kills || supervisor_kills_ >= o_.min_kills);
      if (enough || el >= limit || g_interrupted) break;
      reap_exited();
      const double wait_ms = o_.kills ? std::uniform_real_distribution<double>(0, 2 * o_.kill_interval_ms)(rng_) : 50;
      std::this_thread::sleep_for(std::chrono::microseconds(static_cast<long>(wait_ms * 1000)));
      if (!o_.kills) continue;
      std::vector<u32> ready, busy;
      for (u32 i = 0; i < workers_.size(); ++i)
        if (workers_[i].pid > 0 && v_.s->w[i].ready.load(std::memory_order_acquire) != 0) {
          ready.push_back(i);
          if (v_.s->w[i].busy.load(std::memory_order_relaxed) != 0) busy.push_back(i);
        }
      if (ready.empty()) continue;
      if (!busy.empty() && rng_() % 2 == 0) ready.swap(busy);  // half the kills aimed inside operations
      const u32 i = ready[rng_() % ready.size()];
      (void)sys::kill(workers_[i].pid, SIGKILL);
      int st = 0;
      (void)sys::waitpid(workers_[i].pid, &st, 0);
      v_.s->c.kills.fetch_add(1, std::memory_order_relaxed);
      ++supervisor_kills_;
      after_death(i);
      spawn(i);
    }
  }

  // Sets stop and waits for every worker to leave on its own (bounded); stragglers are killed and
  // reported as failures.
  void stop_all() {
    v_.s->stop.store(1, std::memory_order_release);  // pairs with View::stopping()
    const auto deadline = std::chrono::steady_clock::now() + 15s;
    for (u32 i = 0; i < workers_.size(); ++i) {
      while (workers_[i].pid > 0) {
        int st = 0;
        pid_t r = sys::waitpid(workers_[i].pid, &st, WNOHANG);
        if (r == workers_[i].pid) {
          check_exit(i, st);
          after_death(i);
          workers_[i].pid = -1;
        } else if (std::chrono::steady_clock::now() > deadline) {
          note("torture: %s worker %d did not stop; killing it\n", role_name(workers_[i].role), workers_[i].pid);
          ++failures_;
          (void)sys::kill(workers_[i].pid, SIGKILL);
          (void)sys::waitpid(workers_[i].pid, &st, 0);
          after_death(i);
          workers_[i].pid = -1;
        } else {
          std::this_thread::sleep_for(2ms);
        }
      }
    }
    reap_orphans();
  }

  void kill_all() noexcept {
    for (auto& w : workers_) {
      if (w.pid <= 0) continue;
      (void)sys::kill(w.pid, SIGKILL);
      int st = 0;
      (void)sys::waitpid(w.pid, &st, 0);
      w.pid = -1;
    }
    // Orphans (agents of killed transport workers) die by PR_SET_PDEATHSIG; reap what is there.
    while (sys::waitpid(-1, nullptr, WNOHANG) > 0) {
    }
  }

  u64 failures() const { return failures_; }
  u64 supervisor_kills() const { return supervisor_kills_; }

 private:
  void spawn(u32 i) {
    WorkerSlot& ws = v_.s->w[i];
    ws.ready.store(0, std::memory_order_relaxed);
    ws.busy.store(0, std::memory_order_relaxed);
    ws.role =  static_cast<u32>(workers_[i].role);
    ws.index = i;
    const std::string role = std::to_string(static_cast<u32>(workers_[i].role)), slot = std::to_string(i),
                      sfd = std::to_string(st_.fd()), hfd = std::to_string(hs_.fd());
    const char* argv[] = {"/proc/self/exe", "--worker", role.c_str(), slot.c_str(), sfd.c_str(), hfd.c_str(), nullptr};
    const pid_t parent = sys::getpid();
    std::fflush(nullptr);
    const pid_t pid = sys::fork();
    if (pid < 0) throw Error(Errc::system, "fork (worker) failed", -pid);
    if (pid == 0) {
      // The supervisor's death takes every worker with it.
      if (sys::set_parent_death_signal(SIGKILL) != 0 || sys::getppid() != parent) sys::exit_now(0);
      if (sys::set_cloexec(st_.fd(), false) != 0 || sys::set_cloexec(hs_.fd(), false) != 0) sys::exit_now(126);
      (void)sys::execv("/proc/self/exe", const_cast<char* const*>(argv));
      sys::exit_now(127);
    }
    workers_[i].pid = pid;
    ws.pid.store(pid, std::memory_order_relaxed);
  }

  void check_exit(u32 i, int st) {
    if (WIFEXITED(st) && WEXITSTATUS(st) == 0) return;
    ++failures_;
    if (WIFEXITED(st))
      note("torture: %s worker %d exited with %d\n", role_name(workers_[i].role), workers_[i].pid, WEXITSTATUS(st));
    else
      note("torture: %s worker %d died of signal %d\n", role_name(workers_[i].role), workers_[i].pid,
           WIFSIGNALED(st) ? WTERMSIG(st) : 0);
  }

  // Workers that left on their own (a producer that used up its sequence numbers, or a failure),
  // and orphans: the supervisor is a child subreaper, so an agent child of a killed transport
  // worker (killed itself by PR_SET_PDEATHSIG) is re-parented here and reaped here.
  void reap_exited() {
    for (;;) {
      int st = 0;
      const pid_t p = sys::waitpid(-1, &st, WNOHANG);
      if (p <= 0) return;
      u32 i = 0;
      while (i < workers_.size() && workers_[i].pid != p) ++i;
      if (i == workers_.size()) {
        ++orphans_reaped_;
        continue;
      }
      check_exit(i, st);
      after_death(i);
      if (v_.stopping()) workers_[i].pid = -1;
      else spawn(i);
    }
  }

  // After every worker is reaped: waits (bounded) for the last orphans to die and reaps them;
  // any still alive then is killed and reported.
  void reap_orphans() {
    const auto deadline = std::chrono::steady_clock::now() + 5s;
    for (;;) {
      int st = 0;
      const pid_t p = sys::waitpid(-1, &st, WNOHANG);
      if (p > 0) {
        ++orphans_reaped_;
        continue;
      }
      if (p < 0) return;  // ECHILD: none left
      if (std::chrono::steady_clock::now() > deadline) break;
      std::this_thread::sleep_for(2ms);
    }
    note("torture: orphaned processes still alive after 5 s; killing them\n");
    ++failures_;
    std::FILE* f = std::fopen(("/proc/self/task/" + std::to_string(sys::getpid()) + "/children").c_str(), "r");
    int pid = 0;
    while (f != nullptr && std::fscanf(f, "%d", &pid) == 1) (void)sys::kill(pid, SIGKILL);
    if (f != nullptr) std::fclose(f);
    while (sys::waitpid(-1, nullptr, 0) > 0) {
    }
  }

  // A worker is gone (reaped). A heap worker's published blocks must still hold their contents
  // (they are owned by the dead process and nobody else may touch them); then reclaim_dead()
  // frees them and gives back its caches.
  void after_death(u32 i) {
    v_.s->w[i].ready.store(0, std::memory_order_relaxed);
    if (workers_[i].role != Role::heap) return;
    for (auto& e : v_.s->heap[i].e) {
      if (e.state.load(std::memory_order_acquire) != 1) continue;
      if (!check_entry(hs_, e)) {
        note("torture: a dead heap worker's block at %llu was changed\n",
             static_cast<unsigned long long>(e.off.load(std::memory_order_relaxed)));
        v_.s->c.corrupted.fetch_add(1, std::memory_order_relaxed);
      }
      e.state.store(0, std::memory_order_relaxed);
    }
    heap_.reclaim_dead();
  }

  const Options& o_;
  Segment& st_;
  Segment& hs_;
  Heap& heap_;
  View& v_;
  std::mt19937_64 rng_;
  std::vector<Worker> workers_;
  u64 failures_ = 0;
  u64 supervisor_kills_ = 0;
  u64 orphans_reaped_ = 0;
};

bool parse(int argc, char** argv, Options& o) {
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> const char* { return i + 1 < argc ? argv[++i] : nullptr; };
    const char* val = nullptr;
    if (a == "--no-kills") {
      o.kills = false;
      continue;
    }
    if (a == "--pubsub") {  // the publish/subscribe mode (pubsub_torture.cpp)
      o.pubsub = true;
      continue;
    }
    if (a == "--help" || a == "-h") return false;
    if ((val = next()) == nullptr) return false;
    if (a == "--inject") {
      const std::string f = val;
      if (f == "lose") o.inject = Inject::lose;
      else if (f == "duplicate") o.inject = Inject::duplicate;
      else if (f == "tear") o.inject = Inject::tear;
      else if (f == "scribble") o.inject = Inject::scribble;
      else return false;
      continue;
    }
    char* end = nullptr;
    double d = std::strtod(val, &end);
    if (a == "--duration" && end != val && (*end == 'm' || *end == 'h') && end[1] == '\0') {
      d *= *end == 'm' ? 60 : 3600;  // "--duration 30m", "--duration 2h"
      ++end;
    } else if (a == "--duration" && *end == 's' && end[1] == '\0') {
      ++end;
    }
    if (end == val || *end != '\0' || d < 0) return false;
    if (a == "--duration") o.duration = d;
    else if (a == "--workers") o.workers = static_cast<u32>(d);
    else if (a == "--min-kills") o.min_kills = static_cast<u64>(d);
    else if (a == "--seed") o.seed = static_cast<u64>(std::strtoull(val, nullptr, 10));
    else if (a == "--kill-interval-ms") o.kill_interval_ms = d;
    else if (a == "--max-seconds") o.max_seconds = d;
    else return false;
  }
  return o.workers >= 2 && o.workers <= kMaxWorkers;
}

int supervisor_main(int argc, char** argv) {
  Options o;
  o.seed = static_cast<u64>(std::chrono::steady_clock::now().time_since_epoch().count());
  if (!parse(argc, argv, o)) {
    std::fprintf(stderr,
                 "usage: shmkit_torture [--duration SECONDS (or 30m, 2h)] [--workers N (2..%u)] [--min-kills N] [--seed N]\n"
                 "                      [--kill-interval-ms MS] [--max-seconds S] [--no-kills]\n"
                 "                      [--inject lose|duplicate|tear|scribble] [--pubsub]\n",
                 kMaxWorkers);
    return 64;
  }
  if (o.pubsub)
    return shmkit::torture::pubsub_main(o.duration, o.min_kills, static_cast<std::uint32_t>(o.kill_interval_ms), o.seed);
  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);
  std::signal(SIGPIPE, SIG_IGN);
  sys::check(sys::set_child_subreaper(true), "prctl(PR_SET_CHILD_SUBREAPER)");

  // Tables sized for the run: producer incarnations (8192 messages each) and consumer slots.
  const u64 per_second = static_cast<u64>(o.duration) + 1;
  const u32 max_uids = static_cast<u32>(std::min<u64>(4096 + 128 * per_second, u64{1} << 22));
  const u32 msgs_per_uid = 8192;
  const u32 max_cslots = static_cast<u32>(std::min<u64>(2048 + 32 * per_second, u64{1} << 20));
  const u64 queue_bytes = Queue::required_bytes(64 * 1024);
  const u64 chan_bytes = Channel::required_bytes(kChanWindows, kChanMax);
  u64 off = align_up(SegmentHeader::kDataOffset + sizeof(State), 4096);
  const u64 queue_off = off;
  off = align_up(off + queue_bytes, 4096);
  const u64 chan_off = off;
  off = align_up(off + chan_bytes, 4096);
  const u64 cslot_off = off;
  off = align_up(off + u64{max_cslots + 1} * sizeof(ConsumerSlot), 4096);
  const u64 acked_off = off;
  off = align_up(off + u64{max_uids} * 4, 4096);
  const u64 bits_off = off;
  off = align_up(off + u64{max_uids} * (msgs_per_uid / 8), 1 << 20);

  SegmentOptions so;
  so.capacity = off;
  Segment st = Segment::create_anonymous(off, so);
  SegmentOptions ho;
  ho.capacity = std::size_t{1} << 30;
  Segment hs = Segment::create_anonymous(std::size_t{32} << 20, ho);
  Heap& heap = Heap::attach(hs);

  auto* s = new (st.base() + SegmentHeader::kDataOffset) State{};
  s->seed = o.seed;
  s->max_uids = max_uids;
  s->msgs_per_uid = msgs_per_uid;
  s->max_cslots = max_cslots;
  s->kills_enabled = o.kills ? 1 : 0;
  s->inject = static_cast<u32>(o.inject);
  s->queue_off = queue_off;
  s->queue_bytes = queue_bytes;
  s->chan_off = chan_off;
  s->chan_bytes = chan_bytes;
  s->cslot_off = cslot_off;
  s->acked_off = acked_off;
  s->bits_off = bits_off;
  s->total = off;
  (void)Queue::create(st.base() + queue_off, queue_bytes, kMaxMsg, {st.base(), st.size()});
  (void)Channel::create(st.base() + chan_off, chan_bytes, kChanWindows, kChanMax);
  std::atomic_thread_fence(std::memory_order_release);  // the state is complete before the magic (and before any fork)
  s->magic = State::kMagic;
  View v(st);

  u64 failures = 0, sup_kills = 0;
  {
    Supervisor sup(o, st, hs, heap, v);
    sup.start_all();
    sup.run();
    sup.stop_all();
    failures = sup.failures();
    sup_kills = sup.supervisor_kills();
  }

  // Every worker is reaped. Drain what is left in the queue through the supervisor's own slot;
  // its first pop also repairs the consumer lock if its last owner died.
  Counters& c = s->c;
  ConsumerSlot& mine = v.cslots[max_cslots];
  if (consume(v, mine, true) != 0) ++failures;
  // Finish the recordings of consumers that died between pop and record (INVARIANT3).
  const u64 used = std::min<u64>(c.next_cslot.load(), max_cslots);
  for (u64 i = 0; i < used; ++i) {
    ConsumerSlot& cs = v.cslots[i];
    const u64 pos = cs.receipt.pos.load(std::memory_order_acquire);
    if (cs.recording.load(std::memory_order_acquire) == 1) {
      record_message(v, cs, pos, true);
      c.queue_recoveries.fetch_add(1, std::memory_order_relaxed);
    } else if (pos != cs.recorded_pos.load(std::memory_order_acquire)) {
      record_message(v, cs, pos, false);
      c.queue_recoveries.fetch_add(1, std::memory_order_relaxed);
    }
  }
  // lost: acknowledged (push returned ok) but never popped. A message past the acknowledged one
  // (acked + 1 may have been pushed by a producer killed before it recorded the ack) is fine once;
  // anything beyond that was never pushed and counts as corrupted.
  u64 lost = 0;
  const u64 uids = std::min<u64>(c.next_uid.load(), max_uids);
  for (u64 uid = 0; uid < uids; ++uid) {
    const u32 acked = v.acked[uid].load(std::memory_order_acquire);
    const u64* b = v.bits + uid * v.words_per_uid;
    for (u32 seq = 1; seq <= msgs_per_uid; ++seq) {
      const bool got = (b[(seq - 1) / 64] >> ((seq - 1) % 64) & 1) != 0;
      if (seq <= acked && !got) {
        if (lost < 10) note("torture: lost message uid %llu seq %u\n", static_cast<unsigned long long>(uid), seq);
        ++lost;
      } else if (seq > acked + 1 && got) {
        note("torture: phantom message uid %llu seq %u (acked %u)\n", static_cast<unsigned long long>(uid), seq, acked);
        c.corrupted.fetch_add(1, std::memory_order_relaxed);
      }
    }
  }
  // The lock records: consistent, or repaired from the journal of a dead last owner.
  for (auto& r : s->rec) {
    if (acquire_record(v, r, after(2000ms))) r.lock.unlock();
    else ++failures;
  }
  // The heap: every worker's blocks are freed (by itself or by reclaim_dead), and the structure
  // must be intact.
  heap.reclaim_dead();
  const std::vector<VerifyFinding> findings = heap.verify();
  for (std::size_t i = 0; i < findings.size() && i < 10; ++i)
    note("torture: heap verify: offset %llu: %s\n", static_cast<unsigned long long>(findings[i].offset),
         findings[i].message.c_str());
  const HeapStats hst = heap.stats();
  Heap::detach(hs);

  const u64 recoveries = c.lock_recoveries.load() + c.queue_recoveries.load() + c.rpc_recoveries.load() +
                         c.transport_recoveries.load() + hst.repairs;
  std::printf("torture: detail: supervisor_kills=%llu agent_kills=%llu lock_ops=%llu heap_ops=%llu heap_oom=%llu "
              "pushed=%llu popped=%llu rpc_calls=%llu reads=%llu\n",
              static_cast<unsigned long long>(sup_kills), static_cast<unsigned long long>(c.agent_kills.load()),
              static_cast<unsigned long long>(c.lock_ops.load()), static_cast<unsigned long long>(c.heap_ops.load()),
              static_cast<unsigned long long>(c.heap_oom.load()), static_cast<unsigned long long>(c.pushed.load()),
              static_cast<unsigned long long>(c.popped.load()), static_cast<unsigned long long>(c.rpc_calls.load()),
              static_cast<unsigned long long>(c.reads.load()));
  std::printf("torture: recoveries: lock=%llu queue=%llu rpc=%llu transport=%llu heap_repairs=%llu "
              "heap_caches_reclaimed=%llu heap_owned_reclaimed=%llu; heap blocks_in_use=%llu; stalls=%llu "
              "exhausted=%llu worker_failures=%llu\n",
              static_cast<unsigned long long>(c.lock_recoveries.load()),
              static_cast<unsigned long long>(c.queue_recoveries.load()),
              static_cast<unsigned long long>(c.rpc_recoveries.load()),
              static_cast<unsigned long long>(c.transport_recoveries.load()),
              static_cast<unsigned long long>(hst.repairs), static_cast<unsigned long long>(hst.caches_reclaimed),
              static_cast<unsigned long long>(hst.owned_reclaimed), static_cast<unsigned long long>(hst.blocks_in_use),
              static_cast<unsigned long long>(c.stalls.load()), static_cast<unsigned long long>(c.exhausted.load()),
              static_cast<unsigned long long>(failures));
  const u64 kills = c.kills.load(), dup = c.duplicated.load(), corrupted = c.corrupted.load();
  std::printf("torture: kills=%llu recoveries=%llu verify_findings=%zu lost=%llu duplicated=%llu corrupted=%llu\n",
              static_cast<unsigned long long>(kills), static_cast<unsigned long long>(recoveries), findings.size(),
              static_cast<unsigned long long>(lost), static_cast<unsigned long long>(dup),
              static_cast<unsigned long long>(corrupted));
  std::fflush(stdout);
  const bool ok = findings.empty() && lost == 0 && dup == 0 && corrupted == 0 && failures == 0 &&
                  (!o.kills || sup_kills >= o.min_kills) && !g_interrupted;
  return ok ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    if (argc > 1 && std::strcmp(argv[1], "--worker") == 0) return worker_main(argc, argv);
    return supervisor_main(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "shmkit_torture: %s\n", e.what());
    std::fflush(stderr);
    return argc > 1 && std::strcmp(argv[1], "--worker") == 0 ? 3 : 2;
  }
}
