// The heap's shared-memory layout (private to heap/src). Everything here lives in the segment,
// is standard layout, and links by segment offsets (never pointers), so it works in a mapping
// at any address.
//
// Chunks. A chunk at segment offset c (c % 16 == 0) of size s (s % 16 == 0, s >= 32):
//   c+0   prev_free : boundary tag owned by the arena (written only under the arena lock):
//                     the size of the chunk just before c when that chunk is arena-free, else
//                     not_free_tag(c), a keyed 64-bit value (bit 63 set, which no size has).
//   c+8   word      : size | state | owner | check (see make_word); state changes of a non-free
//                     chunk are made by the chunk's holder without a lock; size changes only
//                     under the arena lock.
//   c+16  user memory (16-aligned), s - 16 bytes usable. While a chunk is free, c+16 holds the
//         next link of the list it is on and c+24 (arena-free only) the prev link.
//
// INVARIANT1  arena_begin <= c < top for every chunk; chunks tile [arena_begin, top) exactly:
//             the chunk after c is at c + size(c), and the last one ends at top.
// INVARIANT2  prev_free(c) == size(p) if the chunk p before c is arena-free, else
//             not_free_tag(c) (also for the first chunk, which has no chunk before it).
// INVARIANT3  no two arena-free chunks are adjacent, and the chunk ending at top is not
//             arena-free (freeing it lowers top instead), so top - arena_begin is the live span.
// INVARIANT4  every arena-free chunk is on exactly the bin list bin_index(size), and the bit of a
//             bin is set iff its list is non-empty.
// INVARIANT5  every chunk in state cached is on exactly one list: a central class list or a
//             cache bin, of the class whose chunk size equals its size — or it is the one
//             `pending` chunk of a cache whose owner is between two stores. A central list is a
//             stack of batches: the first chunk of each batch holds (length << 44 | next batch)
//             at +24, and the lengths sum to the list's count.
// INVARIANT7  a word with state free and size 0 (a tombstone) is never a chunk header: it marks
//             where a freed chunk began before it was merged, so a second free is still a double
//             free.
// INVARIANT8  the control block's place (the heap root) and arena_begin are fixed when the heap is
//             created. Each process reads them once, at attach, and validates them there; from
//             then on it bounds every offset it follows or hands out by its own copy of
//             arena_begin (Heap::arena_begin_) and by the largest segment size it has seen backed
//             — never by the block's words, which another process may overwrite (issue 14 item 6).
//             So no allocation lies in the segment header or the control block, whatever is
//             written there.
// INVARIANT6  an undo log's entries [0, count) hold the old values of words written since the
//             operation began; count == 0 outside an operation (after commit).
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "shmkit/locks/lock.hpp"

namespace shmkit {
namespace heapimpl {

using u64 = std::uint64_t;
using u32 = std::uint32_t;

inline constexpr u64 kHeapMagic = 0x3150414548534d53ULL;  // "SMSHEAP1"
inline constexpr u32 kHeapVersion = 2;  // 2: check bits keyed by ControlBlock::check_key

inline constexpr u64 kHeaderSize = 16;
inline constexpr u64 kMinChunk = 32;
inline constexpr int kClasses = 64;
inline constexpr u64 kSmallMax = kMinChunk + (kClasses - 1) * 16;  // 1040: user sizes <= 1024
inline constexpr int kCacheSlots = 48;  // threads with a cache at once (dead ones' are reclaimed)
inline constexpr int kOwners = 256;
inline constexpr int kExactBins = 256;  // sizes < 4096: one bin per 16 bytes
inline constexpr int kBins = 512;       // then 8 bins per power of two up to 2^44
inline constexpr int kBitmapWords = kBins / 64;
inline constexpr int kArenaLogEntries = 512;  // >= the writes of one carve (3 per chunk, <= 64 chunks) + 40
inline constexpr int kClassLogEntries = 8;
inline constexpr int kDirLogEntries = 16;

// -- chunk word ---------------------------------------------------------------------------------
// bits 0..3 state, 4..43 size (a multiple of 16, so the bits are the size itself),
// 44..51 owner index (state owned), 52..63 check: a 12-bit keyed hash of the chunk offset.
// The key (ControlBlock::check_key) is random per heap and read once per process at attach
// (Heap::key_), so data stored in a block cannot carry a header valid at another offset (a copied
// header fails) nor one computed from the offset alone (issue 14 item 7). A pointer inside a live
// block is refused by its boundary tag too: a chunk whose predecessor is not arena-free holds
// not_free_tag(c) there, 63 keyed bits in the header's cache line (so the free hot path checks it
// at no extra miss), and a non-tag value must name a real arena-free chunk ending at c, which is
// checked under the arena lock (free_chunk_before). Data passes by chance about once in 2^63.
enum ChunkState : u64 { st_invalid = 0, st_free = 1, st_used = 2, st_owned = 3, st_cached = 4 };
inline constexpr u64 kStateMask = 0xF;
inline constexpr u64 kSizeMask = 0x00000FFFFFFFFFF0ULL;
inline constexpr int kOwnerShift = 44;
inline constexpr u64 kOwnerMask = 0xFFULL << kOwnerShift;
inline constexpr int kCheckShift = 52;

inline constexpr u64 kCheckMask = 0xFFFULL << kCheckShift;
inline u64 check_bits(u64 key, u64 off) noexcept {
  // One multiply (the hot paths compute this per block): the top bits of a Fibonacci hash of the
  // offset mixed with the key. Without the key they cannot be computed for any offset.
  return ((((off >> 4) ^ key) * 0x9E3779B97F4A7C15ULL) >> 52) << kCheckShift;
}
inline u64 make_word(u64 key, u64 off, u64 size, u64 state, u64 owner = 0) noexcept {
  return check_bits(key, off) | (owner << kOwnerShift) | size | state;
}
inline u64 word_size(u64 w) noexcept { return w & kSizeMask; }
inline u64 word_state(u64 w) noexcept { return w & kStateMask; }
inline u64 word_owner(u64 w) noexcept { return (w & kOwnerMask) >> kOwnerShift; }
inline bool word_check_ok(u64 key, u64 off, u64 w) noexcept { return (w & kCheckMask) == check_bits(key, off); }
// The boundary tag of a chunk whose predecessor is not arena-free (INVARIANT2): bit 63 set (a size
// never has it) and 63 bits of another keyed hash of the offset.
inline constexpr u64 kNotFreeTag = u64{1} << 63;
inline u64 not_free_tag(u64 key, u64 off) noexcept {
  return kNotFreeTag | ((((off >> 4) ^ ~key) * 0xC2B2AE3D27D4EB4FULL) >> 1);
}

constexpr int class_of_size(u64 chunk_size) noexcept { return static_cast<int>(chunk_size / 16) - 2; }
constexpr u64 class_size(int c) noexcept { return static_cast<u64>(c + 2) * 16; }

// -- undo log ------------------------------------------------------------------------------------
enum LogOp : u32 { op_none = 0, op_free = 1, op_other = 2 };

struct UndoEntry {
  u64 off;  // segment offset of the word
  u64 old;  // its value before the operation wrote it
};

template <int N>
struct UndoLog {
  std::atomic<u32> count;  // INVARIANT6
  std::atomic<u32> op;     // LogOp: op_free asks the repairer to redo the free of `arg`
  std::atomic<u64> arg;
  UndoEntry e[N];
};

// -- per-class central list ---------------------------------------------------------------------
struct alignas(64) ClassCentral {
  Lock lock;
  std::atomic<u64> head;   // first cached chunk (offset) or 0
  std::atomic<u64> count;  // chunks on the list
  UndoLog<kClassLogEntries> log;
};

// -- per-thread cache ----------------------------------------------------------------------------
struct CacheBin {
  std::atomic<u64> head;   // first cached chunk or 0 (written by the owner, or by a locked
                           // operation of the owner recorded in that lock's undo log)
  std::atomic<u64> count;  // length of the list (exact except after the owner's death)
};

// owner: 0 = free, else (tid << 32) | (low 32 bits of the thread's start time), claimed by one CAS.
// pending: the chunk the owner is moving between a bin and the user (0 when none); see heap.cpp.
struct alignas(64) CacheSlot {
  std::atomic<u64> owner;
  std::atomic<u64> pending;
  std::atomic<u64> pid;  // the owning process (for detach and diagnostics)
  u64 reserved[5];
  CacheBin bins[kClasses];
};

struct OwnerEntry {
  std::atomic<u64> owner;  // (pid << 32) | low 32 bits of start time; 0 = free
};

// -- named-object directory ---------------------------------------------------------------------
enum DirState : u64 { dir_empty = 0, dir_constructing = 1, dir_ready = 2, dir_destroying = 3 };
inline constexpr std::size_t kMaxName = 83;
struct DirEntry {
  std::atomic<u64> state;  // DirState
  u64 object;              // segment offset of the object
  u64 size;
  u64 type;
  u64 owner_idx;           // owner index the object was allocated with while constructing
  u32 name_len;
  char name[kMaxName + 1];
};
static_assert(sizeof(DirEntry) == 128);

// -- control block --------------------------------------------------------------------------------
struct ControlBlock {
  u64 magic;
  u32 version;
  u32 control_size;
  u64 arena_begin;
  std::atomic<u64> top;         // end of the chunk area (arena lock)
  std::atomic<u64> high_water;  // max top ever
  std::atomic<u64> repairs;
  std::atomic<u64> caches_reclaimed;
  std::atomic<u64> owned_reclaimed;
  std::atomic<u64> errors;
  u64 check_key;  // random, written once at creation (see check_bits)

  alignas(64) Lock arena_lock;
  std::atomic<u64> bitmap[kBitmapWords];
  std::atomic<u64> bin_head[kBins];
  UndoLog<kArenaLogEntries> arena_log;

  ClassCentral classes[kClasses];

  alignas(64) Lock dir_lock;
  std::atomic<u64> dir_table;     // offset of DirEntry[dir_capacity] (a heap block) or 0
  std::atomic<u64> dir_capacity;
  std::atomic<u64> dir_old_table; // a table being replaced (freed by the repairer if torn)
  UndoLog<kDirLogEntries> dir_log;

  alignas(64) OwnerEntry owners[kOwners];
  CacheSlot caches[kCacheSlots];
};

static_assert(std::is_standard_layout_v<ControlBlock>);
// The layout in shared memory, pinned: every process that maps a heap must agree on it, so a
// change to any offset or size below without a new kHeapVersion must not compile. Change
// kHeapVersion and these lines together (the values are what GCC 12 / x86-64 gives).
static_assert(kHeapVersion == 2, "a new heap version: update the layout assertions below with it");
static_assert(offsetof(ControlBlock, magic) == 0);
static_assert(offsetof(ControlBlock, version) == 8);
static_assert(offsetof(ControlBlock, control_size) == 12);
static_assert(offsetof(ControlBlock, arena_begin) == 16);
static_assert(offsetof(ControlBlock, top) == 24);
static_assert(offsetof(ControlBlock, high_water) == 32);
static_assert(offsetof(ControlBlock, errors) == 64);
static_assert(offsetof(ControlBlock, check_key) == 72);
static_assert(offsetof(ControlBlock, arena_lock) == 128);
static_assert(offsetof(ControlBlock, bitmap) == 168);
static_assert(offsetof(ControlBlock, bin_head) == 232);
static_assert(offsetof(ControlBlock, arena_log) == 4328);
static_assert(offsetof(ControlBlock, classes) == 12544);
static_assert(offsetof(ControlBlock, dir_lock) == 28928);
static_assert(offsetof(ControlBlock, dir_table) == 28968);
static_assert(offsetof(ControlBlock, dir_capacity) == 28976);
static_assert(offsetof(ControlBlock, dir_old_table) == 28984);
static_assert(offsetof(ControlBlock, dir_log) == 28992);
static_assert(offsetof(ControlBlock, owners) == 29312);
static_assert(offsetof(ControlBlock, caches) == 31360);
static_assert(offsetof(ClassCentral, lock) == 0);
static_assert(offsetof(ClassCentral, head) == 40);
static_assert(offsetof(ClassCentral, count) == 48);
static_assert(offsetof(ClassCentral, log) == 56);
static_assert(offsetof(CacheSlot, owner) == 0);
static_assert(offsetof(CacheSlot, pending) == 8);
static_assert(offsetof(CacheSlot, pid) == 16);
static_assert(offsetof(CacheSlot, bins) == 64);
static_assert(offsetof(DirEntry, state) == 0);
static_assert(offsetof(DirEntry, object) == 8);
static_assert(offsetof(DirEntry, size) == 16);
static_assert(offsetof(DirEntry, type) == 24);
static_assert(offsetof(DirEntry, owner_idx) == 32);
static_assert(offsetof(DirEntry, name_len) == 40);
static_assert(offsetof(DirEntry, name) == 44);
static_assert(sizeof(ControlBlock) == 83584);
static_assert(sizeof(ClassCentral) == 256);
static_assert(sizeof(CacheSlot) == 1088);
static_assert(sizeof(UndoLog<kArenaLogEntries>) == 8208);
static_assert(std::is_standard_layout_v<CacheSlot>);
static_assert(sizeof(CacheSlot) % 64 == 0);
static_assert(std::atomic<u64>::is_always_lock_free);
static_assert(sizeof(std::atomic<u64>) == 8);

}  // namespace heapimpl
// The public name of the control block (forward-declared in heap.hpp).
struct HeapControl : heapimpl::ControlBlock {};
static_assert(std::is_standard_layout_v<HeapControl>);
}  // namespace shmkit
