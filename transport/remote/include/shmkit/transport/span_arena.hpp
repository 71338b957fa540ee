/// SpanArena: the io_uring transport's non-moving memory (the Hemlock design's span arena).
///
/// Every pointer the io_uring transport hands to the kernel (request frames, receive buffers,
/// iovec arrays, msghdrs) points into one region that is mapped once at construction and never
/// moved or unmapped until destruction, so the kernel can touch it for as long as an operation is
/// in flight. The region can be registered with a ring as one fixed buffer (READ_FIXED/WRITE_FIXED).
///
/// Allocation sizes round up to a size class: a small class of kSmallClass bytes for tiny
/// arguments (frame headers, path names, iovec arrays) and the powers of two kMinClass (2 KiB) ..
/// kMaxClass (2 MiB). A span is placed at the lowest offset where it fits (first fit in address
/// order, "as close to the front as possible"); a freed span coalesces with the free spans on both
/// sides. Running out is a status (AllocStatus::exhausted), never an exception.
///
/// Not thread-safe: its owner (the transport) serialises calls.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <utility>
#include <vector>

namespace shmkit::transport {

enum class AllocStatus {
  ok,
  exhausted,  // no free span of the needed size class (free something, or use a bigger arena)
  too_large,  // more than kMaxClass bytes asked for: split the request
};

class SpanArena {
 public:
  static constexpr std::size_t kSmallClass = 256;             // tiny arguments
  static constexpr std::size_t kMinClass = 2 * 1024;          // smallest power-of-two class
  static constexpr std::size_t kMaxClass = 2 * 1024 * 1024;   // largest class
  static constexpr std::size_t kGranule = kSmallClass;        // every offset/length is a multiple
  static_assert((kMinClass & (kMinClass - 1)) == 0 && (kMaxClass & (kMaxClass - 1)) == 0);
  static_assert(kMinClass % kGranule == 0 && kMaxClass % kMinClass == 0);

  /// The size class that holds n bytes (n == 0 takes the small class), or 0 when n > kMaxClass.
  static constexpr std::size_t size_class(std::size_t n) noexcept {
    if (n <= kSmallClass) return kSmallClass;
    if (n > kMaxClass) return 0;
    std::size_t c = kMinClass;
    while (c < n) c <<= 1;
    return c;
  }

  struct Span {
    std::byte* data = nullptr;
    std::size_t size = 0;    // the size class, >= the bytes asked for
    std::size_t offset = 0;  // from the region's base; the fixed-buffer offset too
    explicit operator bool() const noexcept { return data != nullptr; }
  };

  /// Maps `capacity` bytes (rounded up to whole pages), populated. Throws shmkit::Error
  /// (invalid_argument for capacity 0, out_of_memory/system when the mapping fails).
  explicit SpanArena(std::size_t capacity);
  ~SpanArena();
  SpanArena(const SpanArena&) = delete;
  SpanArena& operator=(const SpanArena&) = delete;

  [[nodiscard]] AllocStatus try_allocate(std::size_t n, Span* out) noexcept;
  /// Returns a span from try_allocate. Returns false (and changes nothing) for a span this arena
  /// did not hand out or already took back.
  bool free(const Span& s) noexcept;

  std::byte* base() const noexcept { return base_; }
  std::size_t capacity() const noexcept { return capacity_; }
  bool contains(const void* p, std::size_t n) const noexcept;
  std::size_t bytes_in_use() const noexcept { return in_use_; }
  std::size_t live_spans() const noexcept { return used_.size(); }
  /// The free spans as (offset, length), in address order.
  std::vector<std::pair<std::size_t, std::size_t>> free_spans() const;
  /// Checks INVARIANT1..3 below (tests call it after every step).
  bool check_invariants() const noexcept;

 private:
  /// INVARIANT1 (tiling): the free spans in free_ and the allocated spans in used_ are disjoint and
  ///   together cover [0, capacity_) exactly: sum(free_ lengths) + sum(used_ lengths) = capacity_,
  ///   and in_use_ = sum(used_ lengths).
  /// INVARIANT2 (coalesced): for free spans a, b consecutive in address order,
  ///   a.offset + a.length < b.offset (two free spans never touch).
  /// INVARIANT3 (classes): every offset is a multiple of kGranule and every used_ length is a
  ///   size_class() value; the free spans' lengths are multiples of kGranule.
  /// INVARIANT4 (non-moving): base_ is set once in the constructor and unmapped only in the
  ///   destructor; no Span's data changes while it is allocated.
  std::byte* base_ = nullptr;
  std::size_t capacity_ = 0;
  std::size_t in_use_ = 0;
  std::map<std::size_t, std::size_t> free_;  // offset -> length, address order
  std::map<std::size_t, std::size_t> used_;  // offset -> size class
};

}  // namespace shmkit::transport
