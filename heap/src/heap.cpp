// Heap: attach and detach (this process's registry of heaps, the close hook), the cache slots
// of this process's threads, and the allocate/free entry points with their inline hot paths.
// The engine: engine.hpp; the cache protocol: cache_protocol.hpp; the directory, reclaim and
// verify: directory.cpp, reclaim.cpp, verify.cpp.
#include "shmkit/heap/heap.hpp"

#include "shmkit/shm/admin_guard.hpp"
#include "shmkit/heap/allocator.hpp"

#include <fcntl.h>
#include <pthread.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <bit>
#include <cstdio>
#include <cstring>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <unordered_set>

#include "engine.hpp"
#include "shmkit/shm/segment.hpp"
#include "shmkit/sys/error.hpp"
#include "shmkit/sys/log.hpp"
#include "shmkit/sys/process.hpp"
#include "shmkit/sys/syscall.hpp"

namespace shmkit {

using namespace heapimpl;

const char* to_string(HeapStatus s) noexcept {
  switch (s) {
    case HeapStatus::ok: return "ok";
    case HeapStatus::null_pointer: return "null pointer";
    case HeapStatus::foreign_pointer: return "foreign pointer (not a block of this heap)";
    case HeapStatus::double_free: return "double free (the block is already free)";
    case HeapStatus::corrupt: return "heap corrupt";
  }
  return "?";
}

std::uint64_t Heap::hash_type(const char* name, std::size_t size, std::size_t align) noexcept {
  std::uint64_t h = 0xcbf29ce484222325ULL;  // FNV-1a
  for (const char* p = name; *p; ++p) h = (h ^ static_cast<unsigned char>(*p)) * 0x100000001b3ULL;
  h = (h ^ size) * 0x100000001b3ULL;
  h = (h ^ align) * 0x100000001b3ULL;
  return h;
}

namespace {
void atfork_prepare() { g_registry_mutex.lock(); }
void atfork_parent() { g_registry_mutex.unlock(); }
void atfork_child() {
  // relaxed: the child has one thread now.
  g_generation.fetch_add(1, std::memory_order_relaxed);
  for (auto& [ctl, ps] : proc_states()) {
    new (&ps->mu) std::mutex();  // a parent thread may have held it at fork time
    ps->slots.clear();           // the parent's threads own those slots, not us
    ps->owner_idx = -1;
  }
  g_registry_mutex.unlock();
}
}  // namespace

// ---- cache slots ----
namespace {
// Gives this thread's slots back when the thread exits.
struct ThreadReaper {
  ~ThreadReaper();
};
thread_local ThreadReaper t_reaper;
}  // namespace

CacheSlot* Engine::my_slot_slow(std::uint64_t g) noexcept {
  // Another entry of the small thread-local table?
  for (int i = 1; i < kTlsEntries; ++i) {
    if (t_cache[i].ctl == h.ctl_ && t_cache[i].gen == g) {
      std::swap(t_cache[0], t_cache[i]);
      return t_cache[0].slot;
    }
  }
  (void)&t_reaper;  // odr-use: constructs the reaper of this thread
  u64 me = my_thread_packed();
  CacheSlot* got = nullptr;
  for (int pass = 0; pass < 2 && got == nullptr; ++pass) {
    for (auto& s : c.caches) {
      u64 expected = 0;
      // acq_rel: pairs with the release that freed the slot (its bins were emptied before).
      if (s.owner.load(std::memory_order_relaxed) == 0 &&
          s.owner.compare_exchange_strong(expected, me, std::memory_order_acq_rel)) {
        got = &s;
        break;
      }
    }
    if (got == nullptr && pass == 0) h.reclaim_dead();
  }
  if (got == nullptr) return nullptr;
  got->pid.store(static_cast<u64>(::getpid()), std::memory_order_relaxed);
  {
    std::lock_guard lk(h.proc_->mu);
    h.proc_->slots.push_back(got);
  }
  std::memmove(&t_cache[1], &t_cache[0], sizeof(TlsEntry) * (kTlsEntries - 1));
  t_cache[0] = TlsEntry{h.ctl_, got, g};
  return got;
}

// Moves every bin of a slot owned by this thread (or claimed for reclaiming) to the central lists
// and frees the slot.
void Engine::release_slot(CacheSlot* s) noexcept {
  for (int k = 0; k < kClasses; ++k) {
    CacheBin& bin = s->bins[k];
    if (bin.head.load(std::memory_order_relaxed) == 0) continue;
    if (!lock_class(k)) continue;
    ClassCentral& cc = c.classes[k];
    u64 head = bin.head.load(std::memory_order_relaxed);
    u64 cs = class_size(k);
    u64 last = 0, got = 0;
    const u64 lim = limit();
    for (u64 ch = head; ch != 0 && got < kMaxBatch;) {
      if (!cached_ok(ch, cs, lim)) {
        c.errors.fetch_add(1, std::memory_order_relaxed);
        break;
      }
      last = ch;
      ++got;
      ch = next(ch).load(std::memory_order_relaxed);
    }
    Tx<kClassLogEntries> tx(*this, cc.log);
    if (last != 0) {
      tx.set(next(last), 0);  // (cuts a corrupt tail off)
      tx.set(batch_meta(head), (got << kBatchLenShift) | cc.head.load(std::memory_order_relaxed));
      tx.set(cc.head, head);
      tx.set(cc.count, cc.count.load(std::memory_order_relaxed) + got);
    }
    tx.set(bin.head, 0);
    tx.set(bin.count, 0);
    tx.commit();
    unlock(cc.lock);
  }
  // release: the emptied bins are visible before the slot can be claimed again.
  s->owner.store(0, std::memory_order_release);
}

// A slot whose owner died (and which this thread has claimed by CAS): settle the pending chunk,
// then move everything to the central lists. Every lock that the dead owner may have held while
// writing this slot is acquired (and so repaired) before the slot is read.
void Engine::reclaim_slot(CacheSlot* s) noexcept {
  if (lock_arena()) unlock(c.arena_lock);
  u64 p = s->pending.load(std::memory_order_acquire);
  if (p != 0) {
    u64 w = valid_chunk(p) ? word(p).load(std::memory_order_acquire) : 0;
    u64 sz = word_size(w);
    if (w != 0 && sz <= kSmallMax && word_state(w) != st_free) {
      int k = class_of_size(sz);
      bool ours = true;
      if (word_state(w) == st_owned) {
        // acq_rel: races with reclaim_dead freeing the owned block of a dead process.
        ours = word(p).compare_exchange_strong(w, make_word(p, sz, st_cached), std::memory_order_acq_rel);
      }
      if (!ours) {
        s->pending.store(0, std::memory_order_release);
      } else if (lock_class(k)) {
        // head == p: the push completed (or the pop had not begun) and p is on the list.
        // Otherwise p is off the list: a free that had begun, or an allocation never returned.
        if (s->bins[k].head.load(std::memory_order_relaxed) != p) push_central(k, p, &s->pending);
        else s->pending.store(0, std::memory_order_release);
        unlock(c.classes[k].lock);
      }
    } else {
      s->pending.store(0, std::memory_order_release);
    }
  }
  for (int k = 0; k < kClasses; ++k) {
    // Count may be torn by the death; release_slot walks the list.
    if (s->bins[k].head.load(std::memory_order_relaxed) == 0 && s->bins[k].count.load(std::memory_order_relaxed) != 0)
      s->bins[k].count.store(0, std::memory_order_relaxed);
  }
  release_slot(s);
  c.caches_reclaimed.fetch_add(1, std::memory_order_relaxed);
}

namespace {
// True when [p, p+8) is mapped in this process: a thread can outlive the Segment its cache lives
// in (closed without Heap::detach), and must not fault at exit. process_vm_readv on ourselves
// returns -EFAULT instead of faulting.
bool mapped(const void* p) noexcept {
  std::uint64_t v = 0;
  iovec local{&v, sizeof v};
  iovec remote{const_cast<void*>(p), sizeof v};
  return shmkit::sys::process_vm_readv(::getpid(), &local, 1, &remote, 1) == static_cast<ssize_t>(sizeof v);
}

ThreadReaper::~ThreadReaper() {
  std::uint64_t g = g_generation.load(std::memory_order_relaxed);
  std::lock_guard lk(g_registry_mutex);
  for (auto& e : t_cache) {
    if (e.ctl == nullptr || e.gen != g) continue;
    // Only a slot that is still mapped and still ours (not a new segment at the same address).
    if (!mapped(&e.slot->owner) || e.slot->owner.load(std::memory_order_acquire) != my_thread_packed()) {
      e = TlsEntry{};
      continue;
    }
    for (auto& hp : g_heaps) {
      Heap* hh = hp.load(std::memory_order_acquire);
      if (hh != nullptr && hh->control() == e.ctl) {
        Engine eng(*hh);
        eng.release_slot(e.slot);
        auto& ps = proc_states()[e.ctl];
        std::lock_guard lk2(ps->mu);
        std::erase(ps->slots, e.slot);
      }
    }
    e = TlsEntry{};
  }
}
}  // namespace

// ---- Heap ----
// ctl was validated by attach: its arena_begin is this process's copy from now on (INVARIANT8).
// The Heap keeps what it needs of the mapping, never the Segment object (which may be moved).
Heap::Heap(Segment& seg, HeapControl* ctl)
    : ctl_(ctl),
      base_(seg.base()),
      capacity_(seg.capacity()),
      fd_(static_cast<int>(sys::check(sys::dup_fd(seg.fd(), /*cloexec=*/true), "Heap::attach: segment " + seg.name() + ": dup its descriptor"))),
      name_(seg.name()),
      key_(ctl->check_key),
      arena_begin_(ctl->arena_begin),
      known_size_(seg.size()) {}

namespace {
// The heap's check key (layout.hpp, check_bits): 8 bytes from the kernel's random source.
u64 random_check_key(const std::string& segment) {
  const int fd = sys::open("/dev/urandom", O_RDONLY | O_CLOEXEC);
  sys::check(fd, "Heap::attach: segment " + segment + ": open /dev/urandom for the heap's check key");
  u64 key = 0;
  const ssize_t n = sys::read(fd, &key, sizeof key);
  (void)sys::close(fd);  // read-only: nothing to lose
  sys::check(n, "Heap::attach: segment " + segment + ": read /dev/urandom");
  if (n != static_cast<ssize_t>(sizeof key))
    throw Error(Errc::system, "Heap::attach: segment " + segment + ": short read from /dev/urandom");
  return key;
}
}  // namespace
Heap::~Heap() { (void)sys::close(fd_); }  // our own descriptor: nothing to flush

// Registry mutex held. Gives this process's caches of the heap in `slot` back, stales every
// thread's cache entry and deletes the Heap (no thread may be using it: detach's contract, and a
// mapping being unmapped).
void Engine::forget(std::atomic<Heap*>& slot) noexcept {
  Heap* hh = slot.load(std::memory_order_relaxed);
  Engine eng(*hh);
  {
    std::lock_guard lk(hh->proc_->mu);
    for (CacheSlot* s : hh->proc_->slots) eng.release_slot(s);
    hh->proc_->slots.clear();
    hh->proc_->owner_idx = -1;
  }
  g_generation.fetch_add(1, std::memory_order_relaxed);  // stale every thread's cache entry
  slot.store(nullptr, std::memory_order_release);
  proc_states().erase(hh->ctl_);
  delete hh;
}

namespace {
// The close hook of a mapping with a Heap: the last Segment object of the mapping in this process
// is closing (the memory is still mapped).
void heap_mapping_closed(std::byte* /*map*/, void* heap) {
  std::lock_guard lk(g_registry_mutex);
  for (auto& hp : g_heaps)
    if (hp.load(std::memory_order_relaxed) == heap) Engine::forget(hp);
}
}  // namespace

Heap& Heap::attach(Segment& seg) {
  static std::once_flag once;
  std::call_once(once, [] { pthread_atfork(atfork_prepare, atfork_parent, atfork_child); });
  if (!seg.valid()) throw Error(Errc::invalid_argument, "Heap::attach: the segment is not open");
  {
    std::lock_guard lk(g_registry_mutex);
    for (auto& hp : g_heaps) {
      Heap* hh = hp.load(std::memory_order_relaxed);
      // The mapping's Heap, through whichever Segment object (a Heap is forgotten when its
      // mapping closes, so one at this address is this mapping's).
      if (hh != nullptr && hh->base_ == seg.base()) return *hh;
    }
  }
  auto& root = seg.header().root(RootSlot::heap);
  const u64 ctl_off = round_up(SegmentHeader::kDataOffset, 64);
  const u64 arena_begin = round_up(ctl_off + sizeof(HeapControl), 4096);
  // acquire: pairs with the release store that published the control block.
  if (root.load(std::memory_order_acquire) == 0) {
    const u64 key = random_check_key(seg.name());
    if (seg.size() < arena_begin + 65536) seg.grow(arena_begin + 65536);
    // The one admin-lock guard repairs what a dead holder left (the attach table); a heap
    // initialisation that died before publishing the root is simply redone below.
    AdminGuard admin(seg);
    admin.require("Heap::attach");
    if (root.load(std::memory_order_acquire) == 0) {
      auto* raw = seg.base() + ctl_off;
      std::memset(static_cast<void*>(raw), 0, sizeof(HeapControl));
      auto* ctl = reinterpret_cast<HeapControl*>(raw);
      ctl->magic = kHeapMagic;
      ctl->version = kHeapVersion;
      ctl->control_size = static_cast<u32>(sizeof(HeapControl));
      ctl->arena_begin = arena_begin;
      ctl->check_key = key;
      ctl->top.store(arena_begin, std::memory_order_relaxed);
      ctl->high_water.store(arena_begin, std::memory_order_relaxed);
      root.store(ctl_off, std::memory_order_release);  // publishes the initialised block
    }
  }
  u64 off = root.load(std::memory_order_acquire);
  // A misaligned root is refused before the block is read through it.
  // A control block inside the segment header (the attach table, the admin lock) is refused too.
  auto* ctl = off % 64 != 0 || off < SegmentHeader::kDataOffset
                  ? nullptr
                  : static_cast<HeapControl*>(seg.pointer_at(off, sizeof(HeapControl)));
  // Every control-block field the engine uses as an offset is checked here once (issue 10);
  // the engine's bounds checks compare against arena_begin and top.
  const u64 top = ctl == nullptr ? 0 : ctl->top.load(std::memory_order_acquire);
  if (ctl == nullptr || ctl->magic != kHeapMagic || ctl->version != kHeapVersion ||
      ctl->control_size != sizeof(HeapControl) || ctl->arena_begin < off + sizeof(HeapControl) ||
      ctl->arena_begin % 16 != 0 || ctl->arena_begin > seg.size() || top % 16 != 0 ||
      top < ctl->arena_begin || top > seg.size())
    throw Error(Errc::corrupt, "Heap::attach: segment " + seg.name() +
                                   " has no valid heap control block at its heap root (offset " +
                                   std::to_string(off) + "); it was made by another version or is damaged");
  std::lock_guard lk(g_registry_mutex);
  for (auto& hp : g_heaps) {
    Heap* hh = hp.load(std::memory_order_relaxed);
    if (hh != nullptr && hh->base_ == seg.base()) return *hh;
  }
  for (auto& hp : g_heaps) {
    if (hp.load(std::memory_order_relaxed) == nullptr) {
      std::unique_ptr<Heap> heap_owner(new Heap(seg, ctl));
      seg.add_close_hook(&heap_mapping_closed, heap_owner.get());
      Heap* heap = heap_owner.release();
      auto& ps = proc_states()[ctl];
      if (!ps) ps = std::make_unique<ProcState>();
      heap->proc_ = ps.get();
      hp.store(heap, std::memory_order_release);  // pairs with find_attached's acquire
      return *heap;
    }
  }
  throw Error(Errc::invalid_argument, "Heap::attach: more than 16 heaps attached in this process");
}

Heap* Heap::find_attached(const void* p) noexcept {
  auto* b = static_cast<const std::byte*>(p);
  for (auto& hp : g_heaps) {
    Heap* hh = hp.load(std::memory_order_acquire);
    if (hh != nullptr && b >= hh->base_ && b < hh->base_ + hh->capacity_) return hh;
  }
  return nullptr;
}

void Heap::detach(Segment& seg) noexcept {
  std::lock_guard lk(g_registry_mutex);
  for (auto& hp : g_heaps) {
    Heap* hh = hp.load(std::memory_order_relaxed);
    if (hh == nullptr || hh->base_ != seg.base()) continue;
    seg.remove_close_hook(hh);
    Engine::forget(hp);
  }
}

namespace {
// The bin length above which a free spills batch_for(k) chunks: 2 x batch_for(k), a table so that
// the hot path has no division.
constexpr std::array<u64, kClasses> kSpillAbove = [] {
  std::array<u64, kClasses> a{};
  for (int k = 0; k < kClasses; ++k) a[static_cast<std::size_t>(k)] = 2 * Engine::batch_for(k);
  return a;
}();
// The full paths, out of line so that the hot paths below need no stack frame.
[[gnu::noinline]] void* allocate_slow(Heap& h, std::size_t n, std::size_t align) noexcept {
  return Engine(h).allocate(n, align, false);
}
[[gnu::noinline]] HeapStatus deallocate_slow(Heap& h, void* p) noexcept { return Engine(h).deallocate(p); }
[[gnu::noinline]] void spill_slow(Heap& h, CacheSlot* slot, int k, u64 count) noexcept {
  Engine(h).spill(slot, k, count);
}
}  // namespace

// The hot paths: the common case of Engine::allocate / Engine::deallocate (a small block, align
// <= 16, state used, this thread's slot at the front of its table) with the same checks and the
// same pop/push protocol, written with few instructions: a free's one cost is the miss on the
// chunk header, and the fewer instructions each free has, the more frees' misses the processor
// keeps in flight at once (heap_batch_200k frees 200,000 blocks whose headers are all cold).
// Anything else takes the engine's full path, which checks and reports everything.
void* Heap::allocate(std::size_t n, std::size_t align) noexcept {
  const TlsEntry& e0 = t_cache[0];
  // align - 1 < 16 with align a power of two: align in {1, 2, 4, 8, 16} (align 0 wraps and fails).
  if (n <= kSmallMax - kHeaderSize && align - 1 < 16 && (align & (align - 1)) == 0 && e0.ctl == ctl_ &&
      e0.gen == g_generation.load(std::memory_order_relaxed)) [[likely]] {
    const u64 s = n <= kMinChunk - kHeaderSize ? kMinChunk : round_up(n + kHeaderSize, 16);  // chunk_size_for
    CacheSlot* slot = e0.slot;
    CacheBin& bin = slot->bins[class_of_size(s)];
    const u64 ch = bin.head.load(std::memory_order_relaxed);
    // relaxed: bounds only. top is a word of the segment: it is trusted only up to the size this
    // process has seen backed (known_size_; a larger top takes the full path, which checks it).
    const u64 top = ctl_->top.load(std::memory_order_relaxed);
    const u64 known = known_size_.load(std::memory_order_relaxed);
    // The checks of Engine::allocate: the head lies in the arena, the whole chunk below top, and
    // its word says cached, of this class, at this offset. Compares only, no sum that could wrap.
    if (ch % 16 == 0 && ch >= arena_begin_ && ch < top && top - ch >= s && top <= known) [[likely]] {
      auto& word = *reinterpret_cast<std::atomic<u64>*>(base_ + ch + 8);  // cast-align: ch % 16 == 0
      if (word.load(std::memory_order_relaxed) == make_word(key_, ch, s, st_cached)) [[likely]] {
        cache_pop(base_, *slot, bin, ch, make_word(key_, ch, s, st_used));  // cache_protocol.hpp
        return base_ + ch + kHeaderSize;
      }
    }
  }
  return allocate_slow(*this, n, align);
}
void* Heap::allocate_owned(std::size_t n, std::size_t align) noexcept {
  return Engine(*this).allocate(n, align, true);
}
HeapStatus Heap::disown(void* p) noexcept {
  Engine e(*this);
  u64 ch = 0, w = 0;
  if (HeapStatus st = e.check_block(p, ch, w); st != HeapStatus::ok) return st;
  const int me = e.my_owner_idx();
  if (word_state(w) != st_owned || me < 0 || word_owner(w) != static_cast<u64>(me)) return HeapStatus::corrupt;
  // acq_rel: the owned-block CAS protocol (see deallocate); this process is alive, so no
  // reclaim_dead competes for the block, but a buggy double disown/free loses here.
  if (!e.word(ch).compare_exchange_strong(w, e.make_word(ch, word_size(w), st_used), std::memory_order_acq_rel))
    return HeapStatus::corrupt;
  return HeapStatus::ok;
}
HeapStatus Heap::deallocate(void* p) noexcept {
  const TlsEntry& e0 = t_cache[0];
  // As integers: p may lie below base (off wraps to a huge value and fails the range test).
  const u64 off = reinterpret_cast<std::uintptr_t>(p) - reinterpret_cast<std::uintptr_t>(base_);
  const u64 top = ctl_->top.load(std::memory_order_acquire);
  // relaxed: a bound private to this process (see allocate).
  const u64 known = known_size_.load(std::memory_order_relaxed);
  if (off % 16 == 0 && off >= arena_begin_ + kHeaderSize && off < top && top <= known && e0.ctl == ctl_ &&
      e0.gen == g_generation.load(std::memory_order_relaxed)) [[likely]] {
    const u64 ch = off - kHeaderSize;
    auto& word = *reinterpret_cast<std::atomic<u64>*>(base_ + ch + 8);  // cast-align: ch % 16 == 0
    const u64 w = word.load(std::memory_order_acquire);
    // relaxed: the boundary tag shares the header's line; one that is not this offset's keyed
    // tag (a chunk after an arena-free one, or no chunk) takes the full path.
    const u64 tag = reinterpret_cast<std::atomic<u64>*>(base_ + ch)->load(std::memory_order_relaxed);
    const u64 s = word_size(w);
    // check_block's tests, for a small chunk in state used (owned chunks take the full path, for
    // its CAS against reclaim_dead) after a chunk that is not arena-free: the check bits and the
    // tag of this offset, the state, the size in range and the chunk below top.
    if ((w & ~kSizeMask) == (check_bits(key_, ch) | st_used) && tag == not_free_tag(key_, ch) && s >= kMinChunk &&
        s <= kSmallMax && s <= top - ch) [[likely]] {
      CacheSlot* slot = e0.slot;
      const int k = class_of_size(s);
      CacheBin& bin = slot->bins[k];
      cache_push_begin(*slot, ch);  // the push (cache_protocol.hpp)
      word.store(make_word(key_, ch, s, st_cached), std::memory_order_release);  // see cache_push_finish
      const u64 cnt = cache_push_finish(base_, *slot, bin, ch);
      const u64 above = kSpillAbove[static_cast<std::size_t>(k)];
      if (cnt > above) [[unlikely]] spill_slow(*this, slot, k, above / 2);
      return HeapStatus::ok;
    }
  }
  return deallocate_slow(*this, p);
}

std::size_t Heap::usable_size(const void* p) const noexcept {
  u64 ch = 0, w = 0;
  if (Engine(const_cast<Heap&>(*this)).check_block(p, ch, w) != HeapStatus::ok) return 0;
  return word_size(w) - kHeaderSize;
}
bool Heap::owns(const void* p) const noexcept { return usable_size(p) != 0; }

void* Heap::reallocate(void* p, std::size_t n) noexcept {
  Engine e(*this);
  if (p == nullptr) return e.allocate(n, 16, false);
  u64 ch = 0, w = 0;
  if (e.check_block(p, ch, w) != HeapStatus::ok) {
    ctl_->errors.fetch_add(1, std::memory_order_relaxed);
    return nullptr;
  }
  std::size_t have = word_size(w) - kHeaderSize;
  if (n <= have) return p;
  void* q = e.allocate(n, 16, word_state(w) == st_owned);
  if (q == nullptr) return nullptr;
  std::memcpy(q, p, have);
  (void)e.deallocate(p);
  return q;
}

// ---- allocator support ----
Heap& heap_detail::heap_for(const void* control) {
  thread_local Heap* last = nullptr;
  thread_local std::uint64_t last_gen = 0;
  std::uint64_t g = g_generation.load(std::memory_order_relaxed);
  if (last != nullptr && last_gen == g && last->control() == control) [[likely]] return *last;
  Heap* h = Heap::find_attached(control);
  if (h == nullptr || h->control() != control)
    throw Error(Errc::not_found,
                "shmkit::Allocator: no heap attached in this process at this address (call "
                "shmkit::Heap::attach(segment) first; Allocator<T> needs the segment mapped at home, "
                "use OffsetAllocator<T> in a relocated process)");
  last = h;
  last_gen = g;
  return *h;
}

void heap_detail::report_bad_free(HeapStatus s, const void* p) noexcept {
  log().error("shmkit heap: deallocate({}) refused: {}", p, to_string(s));
}

}  // namespace shmkit
