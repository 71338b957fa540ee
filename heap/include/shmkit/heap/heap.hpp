/// Heap: a process-safe free-list heap inside a Segment.
///
/// Every process that maps the segment can allocate and free; blocks hold ordinary C++ objects at
/// the same address in every process mapped at home (relocated processes use offsets, see
/// allocator.hpp). The structures live in the segment and link by offsets only.
///
/// Design (details and invariants at the definitions in heap/src/layout.hpp):
///  * Chunks with a 16-byte header (boundary tag word owned by the arena + a size/state word owned
///    by the chunk's holder); user memory is 16-aligned; any alignment up to the page size.
///  * Small chunks (<= 1040 bytes, 64 classes of 16 bytes) go through a per-thread cache kept IN THE
///    SEGMENT and owned by (tid, start time): no lock and no atomic read-modify-write on the hot
///    path. A cache refills from / spills to a per-class central list (one lock per class; a stack
///    of batches, so a refill or a spill is O(1) under the lock), which is filled from the arena
///    a little at a time. Before the arena would extend into untouched memory, central lists are
///    given back to it (scavenged, coalescing) until the request fits; and before a large block is
///    taken from the arena while the central lists hold more than 1/64 of the arena's span, they
///    and the calling thread's own cache go back whole (parked small chunks would otherwise fence
///    the free space a burst of frees left). The small allocate/free hot paths are inline and
///    short, so that the processor overlaps the header misses of consecutive frees.
///  * Large chunks come from the arena: size-binned free lists (exact below 4 KiB, 8 per power of
///    two above, best fit within a bin), boundary tags, immediate coalescing, one lock. When the
///    arena is full the heap grows the segment (try_grow) up to its capacity, and only then reports
///    out-of-memory (after reclaim_dead()).
///  * Lock order: named-object directory -> class locks (ascending) -> arena -> segment admin lock.
///    A class lock's repairer repairs the arena first (a scavenge writes central lists in an arena
///    transaction while holding both).
///  * Crash recovery: every change made under a heap lock first records the old value of each word
///    it writes in an undo log beside that lock; a process that acquires the lock and learns that
///    its owner died rolls the log back (and replays an interrupted free). A cache of a dead thread
///    is handed back to the central lists (reclaim_dead(), and automatically when a thread looks for
///    a cache slot); the one chunk a thread may have had in flight is recorded in its cache.
///  * Owned allocations (opt-in, allocate_owned): freed by reclaim_dead() once their process died.
///
/// Lifetime: Heap::attach(seg) returns this process's Heap for the mapping (creating the heap in
/// the segment on first use). The Heap belongs to the mapping, not to the Segment object: it keeps
/// the mapping's base, capacity and its own descriptor of the file (to grow it), so the Segment
/// object may be moved (attach through the moved-to object returns the same Heap). When the last
/// Segment object of the mapping in this process closes, the Heap gives this process's caches back
/// and is forgotten (a close hook); Heap::detach(seg) does the same earlier. A thread's cache also
/// goes back when the thread exits, and a dead process's caches are reclaimed by reclaim_dead(),
/// which every process runs when it needs a cache slot or memory.
///
/// Usage (the README's):
///   auto seg = shmkit::Segment::open_or_create("/orders", 256 << 20);
///   shmkit::Heap& heap = shmkit::Heap::attach(seg);
///   using OrderMap = std::map<int, Order, std::less<>, shmkit::Allocator<std::pair<const int, Order>>>;
///   auto* orders = heap.find_or_construct<OrderMap>("orders", shmkit::Allocator<std::pair<const int, Order>>(heap));
///   auto* lock = heap.find_or_construct<shmkit::Lock>("orders.lock");
///   { std::lock_guard g(*lock); (*orders)[42] = Order{...}; }
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <new>
#include <string>
#include <string_view>
#include <tuple>
#include <typeinfo>
#include <utility>
#include <vector>

namespace shmkit {

class Segment;
struct HeapControl;  // the shared control block (heap/src/layout.hpp)
namespace heapimpl {
struct Engine;     // the heap's implementation (heap/src)
struct ProcState;  // this process's state about one attached heap (heap/src)
}  // namespace heapimpl

/// Result of deallocate(): a double free or a pointer that did not come from this heap is an error
/// the caller learns about, never silently accepted.
enum class HeapStatus {
  ok = 0,
  null_pointer,     // deallocate(nullptr): accepted and ignored (like free(NULL)) — returned for info
  foreign_pointer,  // not a block of this heap (outside the arena, misaligned, or no valid header)
  double_free,      // the block is already free
  corrupt,          // the heap structure failed a check; see verify()
};
const char* to_string(HeapStatus) noexcept;

enum class VerifyMode { quiescent, live };

struct VerifyFinding {
  std::uint64_t offset;  // segment offset where the inconsistency was found (0 when none applies)
  std::string message;
};

struct HeapStats {
  std::uint64_t arena_begin = 0, arena_end = 0;  // segment offsets of the chunk area
  std::uint64_t high_water = 0;                  // highest arena end ever (bytes touched)
  std::uint64_t segment_size = 0, segment_capacity = 0;
  std::uint64_t bytes_in_use = 0;      // chunk bytes of allocated blocks (incl. 16-byte headers)
  std::uint64_t blocks_in_use = 0;
  std::uint64_t bytes_owned = 0;       // of which owned by a process (allocate_owned)
  std::uint64_t bytes_free = 0;        // free chunks + cached small chunks + unused tail of size()
  std::uint64_t bytes_cached = 0;      // small chunks held by thread caches and central lists
  std::uint64_t largest_free = 0;      // largest free chunk (or tail) in bytes
  std::uint64_t free_chunks = 0;
  double fragmentation = 0;            // 1 - largest_free / bytes_free (0 = one free block)
  std::uint64_t repairs = 0;           // lock-owner deaths repaired
  std::uint64_t caches_reclaimed = 0;  // caches of dead threads given back
  std::uint64_t owned_reclaimed = 0;   // owned blocks of dead processes freed
  std::uint64_t errors = 0;            // double frees / foreign pointers reported
  std::uint64_t caches_in_use = 0;
  std::uint64_t named_objects = 0;
  static constexpr int kClasses = 64;
  std::uint64_t class_chunk_size[kClasses] = {};
  std::uint64_t class_in_use[kClasses] = {};   // allocated blocks per size class
  std::uint64_t class_cached[kClasses] = {};   // free chunks held in caches per size class
};

class Heap {
 public:
  /// This process's Heap for the mapping of `seg`, creating the heap in the segment if it has none
  /// yet (race-free: under the segment's admin lock). Throws shmkit::Error (corrupt) when the
  /// segment's heap root does not hold a valid control block.
  static Heap& attach(Segment& seg);
  /// The attached Heap whose segment contains `p` (a block, a control block, any address in a
  /// mapping); nullptr when none. Used by the allocators.
  static Heap* find_attached(const void* p) noexcept;
  /// Gives back this process's caches for seg and forgets the Heap. No thread may be using it.
  static void detach(Segment& seg) noexcept;

  Heap(const Heap&) = delete;
  Heap& operator=(const Heap&) = delete;

  /// -- allocation (hot paths: noexcept) --
  /// nullptr when out of memory (after growing the segment to its capacity) or align is not a
  /// power of two <= the page size.
  void* allocate(std::size_t n, std::size_t align = 16) noexcept;
  /// As allocate, but the block is owned by this process: reclaim_dead() frees it once this process
  /// has died.
  void* allocate_owned(std::size_t n, std::size_t align = 16) noexcept;
  [[nodiscard]] HeapStatus deallocate(void* p) noexcept;
  /// An owned block of this process becomes an ordinary block: reclaim_dead() no longer frees it
  /// when this process dies (the hand-over of a block allocated with allocate_owned to a shared
  /// structure, as named objects and published pubsub samples do). ok when it did; corrupt when the
  /// block is not owned by this process; foreign_pointer / double_free as for deallocate.
  [[nodiscard]] HeapStatus disown(void* p) noexcept;
  /// realloc semantics: nullptr p allocates; on failure returns nullptr and p stays valid. A p that
  /// is not a live block returns nullptr and counts an error.
  void* reallocate(void* p, std::size_t n) noexcept;
  /// Bytes usable at p (>= the size asked for); 0 for a pointer that is not a live block.
  std::size_t usable_size(const void* p) const noexcept;
  /// True when p is a live block of this heap.
  bool owns(const void* p) const noexcept;

  /// -- named objects --
  template <class T, class... Args>
  T* find_or_construct(std::string_view name, Args&&... args);
  template <class T>
  T* find(std::string_view name);  // nullptr when absent; throws Error on a type mismatch
  template <class T>
  bool destroy(std::string_view name);  // runs ~T and frees; false when absent
  std::vector<std::string> names();

  /// -- recovery and checks --
  /// Gives back caches of dead threads and frees owned blocks of dead processes; returns how many
  /// caches + blocks it reclaimed.
  std::size_t reclaim_dead() noexcept;
  /// Walks every chunk, free list, central list and cache; one finding per inconsistency.
  /// quiescent: exact, for when no other thread or process is allocating (every cached chunk must
  /// be on exactly one list). live: for a segment in use (`shmkit verify`): the caches of other
  /// live threads change without a lock, so they are followed without findings and a cached chunk
  /// on no list is not reported (it may be in flight); all locked structures are still exact.
  std::vector<VerifyFinding> verify(VerifyMode mode = VerifyMode::quiescent);
  HeapStats stats();

  /// The segment's name ("" for an anonymous or adopted one), for messages.
  const std::string& segment_name() const noexcept { return name_; }
  HeapControl* control() const noexcept { return ctl_; }
  std::byte* base() const noexcept { return base_; }

  /// Type identity used by the named-object directory: size + hash of the type's mangled name.
  template <class T>
  static std::uint64_t type_hash() noexcept {
    return hash_type(typeid(T).name(), sizeof(T), alignof(T));
  }
  static std::uint64_t hash_type(const char* name, std::size_t size, std::size_t align) noexcept;

  ~Heap();

 private:
  explicit Heap(Segment& seg, HeapControl* ctl);
  using ConstructFn = void (*)(void* where, void* ctx);
  using DestroyFn = void (*)(void* obj);
  void* named_get(std::string_view name, std::size_t size, std::size_t align, std::uint64_t type,
                  ConstructFn construct, void* ctx);
  bool named_destroy(std::string_view name, std::size_t size, std::uint64_t type, DestroyFn destroy_fn);

  void repair_directory() noexcept;
  void* pointer_at_checked(std::uint64_t off, std::size_t len) const noexcept;

  HeapControl* ctl_;
  std::byte* base_;
  std::size_t capacity_;  // the mapping's reservation
  int fd_;                // this Heap's own descriptor of the segment's file (grows it)
  std::string name_;
  heapimpl::ProcState* proc_ = nullptr;
  // What this process knows about the arena, never re-read from the segment (INVARIANT8 in
  // heap/src/layout.hpp): its first chunk, validated at attach, and the largest size of the segment
  // seen backed, which bounds the top that the hot paths trust.
  std::uint64_t key_;  // the chunk check key (layout.hpp, check_bits), read once at attach
  std::uint64_t arena_begin_;
  std::atomic<std::uint64_t> known_size_;
  friend struct heapimpl::Engine;
};

template <class T, class... Args>
T* Heap::find_or_construct(std::string_view name, Args&&... args) {
  auto args_tuple = std::forward_as_tuple(std::forward<Args>(args)...);
  using Tuple = decltype(args_tuple);
  ConstructFn fn = [](void* where, void* ctx) {
    std::apply([where](auto&&... a) { ::new (where) T(std::forward<decltype(a)>(a)...); },
               std::move(*static_cast<Tuple*>(ctx)));
  };
  return static_cast<T*>(named_get(name, sizeof(T), alignof(T), type_hash<T>(), fn, &args_tuple));
}

template <class T>
T* Heap::find(std::string_view name) {
  return static_cast<T*>(named_get(name, sizeof(T), alignof(T), type_hash<T>(), nullptr, nullptr));
}

template <class T>
bool Heap::destroy(std::string_view name) {
  return named_destroy(name, sizeof(T), type_hash<T>(), [](void* p) { static_cast<T*>(p)->~T(); });
}

}  // namespace shmkit

