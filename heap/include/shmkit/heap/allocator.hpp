/// Allocators over a shmkit::Heap.
///
///  * Allocator<T>        — for standard containers (vector, basic_string, map, unordered_map) that
///                          live in the segment and are used by processes mapped AT HOME (the
///                          segment's recorded base): the container holds raw pointers, which are
///                          the same in every such process. The allocator itself stores the heap's
///                          control-block address (also a home address), so it can be stored in
///                          the segment and used by any attached process.
///  * OffsetAllocator<T>  — pointer type boost::interprocess::offset_ptr<T>, for processes that had
///                          to relocate: Boost.Interprocess containers (boost::interprocess::vector,
///                          map, basic_string...) accept it and store only self-relative offsets.
///  * String              — std::basic_string over Allocator<char>: text in the segment (a struct
///                          stored in a shared container holds a String, never a std::string,
///                          whose characters would be in one process's private heap).
///  * HeapResource        — a std::pmr::memory_resource over a Heap (a process-local object: it has
///                          a vtable, so a pmr container using it is usable from this process only).
///
/// Allocation failure throws std::bad_alloc (the containers' contract). A deallocate of a pointer
/// the heap does not recognise is reported (logged; counted in HeapStats::errors) — never ignored.
#pragma once

#include <boost/interprocess/offset_ptr.hpp>

#include <cstddef>
#include <limits>
#include <memory_resource>
#include <new>
#include <string>
#include <type_traits>

#include "shmkit/heap/heap.hpp"

namespace shmkit {

namespace heap_detail {
/// The attached Heap for a control block address in this process (throws when not attached).
Heap& heap_for(const void* control);
/// Reports a failed deallocate (logs; the heap already counted it).
void report_bad_free(HeapStatus s, const void* p) noexcept;
}  // namespace heap_detail

template <class T>
class Allocator {
 public:
  using value_type = T;
  using size_type = std::size_t;
  using difference_type = std::ptrdiff_t;
  using propagate_on_container_copy_assignment = std::true_type;
  using propagate_on_container_move_assignment = std::true_type;
  using propagate_on_container_swap = std::true_type;
  using is_always_equal = std::false_type;

  explicit Allocator(Heap& heap) noexcept : control_(heap.control()) {}
  template <class U>
  Allocator(const Allocator<U>& o) noexcept : control_(o.control()) {}

  T* allocate(std::size_t n) {
    if (n > std::numeric_limits<std::size_t>::max() / sizeof(T)) throw std::bad_alloc();
    void* p = heap().allocate(n * sizeof(T), alignof(T) < 16 ? 16 : alignof(T));
    if (p == nullptr) throw std::bad_alloc();
    return static_cast<T*>(p);
  }
  void deallocate(T* p, std::size_t) noexcept {
    HeapStatus s = heap().deallocate(p);
    if (s != HeapStatus::ok) heap_detail::report_bad_free(s, p);
  }

  Heap& heap() const { return heap_detail::heap_for(control_); }
  HeapControl* control() const noexcept { return control_; }
  template <class U>
  friend bool operator==(const Allocator& a, const Allocator<U>& b) noexcept {
    return a.control() == b.control();
  }

 private:
  HeapControl* control_;  // a home address: valid in every process mapped at home
};

/// Characters in the segment, for processes mapped at home (like every Allocator<T> container).
/// Construct one with the heap's allocator: String(text, Allocator<char>(heap)).
using String = std::basic_string<char, std::char_traits<char>, Allocator<char>>;

template <class T>
class OffsetAllocator {
 public:
  using value_type = T;
  using pointer = boost::interprocess::offset_ptr<T>;
  using const_pointer = boost::interprocess::offset_ptr<const T>;
  using void_pointer = boost::interprocess::offset_ptr<void>;
  using const_void_pointer = boost::interprocess::offset_ptr<const void>;
  using reference = T&;
  using const_reference = const T&;
  using size_type = std::size_t;
  using difference_type = std::ptrdiff_t;
  using propagate_on_container_copy_assignment = std::true_type;
  using propagate_on_container_move_assignment = std::true_type;
  using propagate_on_container_swap = std::true_type;
  using is_always_equal = std::false_type;
  template <class U>
  struct rebind {
    using other = OffsetAllocator<U>;
  };

  explicit OffsetAllocator(Heap& heap) noexcept : control_(heap.control()) {}
  OffsetAllocator(const OffsetAllocator& o) noexcept : control_(o.control()) {}
  template <class U>
  OffsetAllocator(const OffsetAllocator<U>& o) noexcept : control_(o.control()) {}
  OffsetAllocator& operator=(const OffsetAllocator& o) noexcept {
    control_ = o.control();
    return *this;
  }

  pointer allocate(std::size_t n) {
    if (n > std::numeric_limits<std::size_t>::max() / sizeof(T)) throw std::bad_alloc();
    void* p = heap().allocate(n * sizeof(T), alignof(T) < 16 ? 16 : alignof(T));
    if (p == nullptr) throw std::bad_alloc();
    return pointer(static_cast<T*>(p));
  }
  void deallocate(const pointer& p, std::size_t) noexcept {
    HeapStatus s = heap().deallocate(p.get());
    if (s != HeapStatus::ok) heap_detail::report_bad_free(s, p.get());
  }
  std::size_t max_size() const noexcept { return std::numeric_limits<std::size_t>::max() / sizeof(T); }
  template <class U, class... Args>
  void construct(U* p, Args&&... args) {
    ::new (static_cast<void*>(p)) U(std::forward<Args>(args)...);
  }
  template <class U>
  void destroy(U* p) {
    p->~U();
  }

  Heap& heap() const { return heap_detail::heap_for(control_.get()); }
  HeapControl* control() const noexcept { return control_.get(); }
  friend bool operator==(const OffsetAllocator& a, const OffsetAllocator& b) noexcept {
    return a.control() == b.control();
  }
  friend bool operator!=(const OffsetAllocator& a, const OffsetAllocator& b) noexcept { return !(a == b); }

 private:
  boost::interprocess::offset_ptr<HeapControl> control_;  // self-relative: valid at any mapping
};

class HeapResource final : public std::pmr::memory_resource {
 public:
  explicit HeapResource(Heap& heap) noexcept : heap_(&heap) {}
  Heap& heap() const noexcept { return *heap_; }

 private:
  void* do_allocate(std::size_t bytes, std::size_t align) override {
    void* p = heap_->allocate(bytes, align < 16 ? 16 : align);
    if (p == nullptr) throw std::bad_alloc();
    return p;
  }
  void do_deallocate(void* p, std::size_t, std::size_t) override {
    HeapStatus s = heap_->deallocate(p);
    if (s != HeapStatus::ok) heap_detail::report_bad_free(s, p);
  }
  bool do_is_equal(const std::pmr::memory_resource& o) const noexcept override {
    auto* r = dynamic_cast<const HeapResource*>(&o);
    return r != nullptr && r->heap_ == heap_;
  }
  Heap* heap_;
};

}  // namespace shmkit
