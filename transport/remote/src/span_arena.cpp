#include "shmkit/transport/span_arena.hpp"

#include <sys/mman.h>

#include <string>

#include "shmkit/sys/error.hpp"
#include "shmkit/sys/syscall.hpp"

namespace shmkit::transport {

SpanArena::SpanArena(std::size_t capacity) {
  if (capacity == 0) throw Error(Errc::invalid_argument, "SpanArena: capacity must be > 0");
  const std::size_t page = sys::page_size();
  capacity_ = (capacity + page - 1) / page * page;
  static_assert(kGranule <= 4096, "a page is a whole number of granules");
  void* p = nullptr;
  // MAP_POPULATE: the kernel will touch these pages during I/O; fault them in once, up front.
  int r = sys::mmap(&p, nullptr, capacity_, PROT_READ | PROT_WRITE,
                    MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
  if (r < 0) {
    throw_errno("SpanArena: mapping " + std::to_string(capacity_) +
                    " bytes for the io_uring span arena failed (lower the arena capacity)",
                -r);
  }
  base_ = static_cast<std::byte*>(p);
  free_.emplace(0, capacity_);
}

SpanArena::~SpanArena() {
  if (base_ != nullptr) (void)sys::munmap(base_, capacity_);
}

AllocStatus SpanArena::try_allocate(std::size_t n, Span* out) noexcept {
  const std::size_t need = size_class(n);
  if (need == 0) return AllocStatus::too_large;
  // First fit in address order: the lowest free span that can hold `need`.
  for (auto it = free_.begin(); it != free_.end(); ++it) {
    if (it->second < need) continue;
    const std::size_t off = it->first;
    const std::size_t rest = it->second - need;
    free_.erase(it);
    if (rest != 0) free_.emplace(off + need, rest);  // the tail stays free (INVARIANT2 holds:
                                                     // its right neighbour was not free before)
    try {
      used_.emplace(off, need);
    } catch (...) {  // node allocation failed: put the span back whole, report exhaustion
      if (rest != 0) free_.erase(off + need);
      free_.emplace(off, need + rest);  // reuses the node just released: cannot throw in practice
      return AllocStatus::exhausted;
    }
    in_use_ += need;
    *out = Span{base_ + off, need, off};
    return AllocStatus::ok;
  }
  return AllocStatus::exhausted;
}

bool SpanArena::free(const Span& s) noexcept {
  auto u = used_.find(s.offset);
  if (u == used_.end() || u->second != s.size || s.data != base_ + s.offset) return false;
  used_.erase(u);
  in_use_ -= s.size;
  std::size_t off = s.offset, len = s.size;
  // Coalesce with the free span after it ...
  auto next = free_.lower_bound(off);
  if (next != free_.end() && next->first == off + len) {
    len += next->second;
    next = free_.erase(next);
  }
  // ... and with the one before it.
  if (next != free_.begin()) {
    auto prev = std::prev(next);
    if (prev->first + prev->second == off) {
      prev->second += len;
      return true;
    }
  }
  try {
    free_.emplace_hint(next, off, len);
  } catch (...) {
    return false;  // cannot happen in practice (a node was just released); never leaks silently
  }
  return true;
}

bool SpanArena::contains(const void* p, std::size_t n) const noexcept {
  auto a = reinterpret_cast<std::uintptr_t>(p);
  auto b = reinterpret_cast<std::uintptr_t>(base_);
  return a >= b && n <= capacity_ && a - b <= capacity_ - n;
}

std::vector<std::pair<std::size_t, std::size_t>> SpanArena::free_spans() const {
  return {free_.begin(), free_.end()};
}

bool SpanArena::check_invariants() const noexcept {
  // Merge the two address-ordered maps and walk [0, capacity_).
  auto f = free_.begin();
  auto u = used_.begin();
  std::size_t at = 0, used_sum = 0;
  bool last_free = false;
  while (f != free_.end() || u != used_.end()) {
    const bool take_free = u == used_.end() || (f != free_.end() && f->first < u->first);
    const auto& [off, len] = take_free ? *f : *u;
    if (off != at || len == 0 || off % kGranule != 0 || len % kGranule != 0) return false;  // 1, 3
    if (take_free) {
      if (last_free) return false;  // INVARIANT2
      ++f;
    } else {
      if (size_class(len) != len) return false;  // INVARIANT3
      used_sum += len;
      ++u;
    }
    last_free = take_free;
    at = off + len;
  }
  return at == capacity_ && used_sum == in_use_;
}

}  // namespace shmkit::transport
