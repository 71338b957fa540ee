/// OffsetPtr<T>: a pointer stored as the distance from its own address to the target (iceoryx's
/// relative pointer, Boost.Interprocess's offset_ptr). It stays valid when the segment is mapped at
/// another base in another process, because both the pointer and its target move together.
///
/// Encoding: diff == kNull (INTPTR_MIN) means null; any other value v means
/// target = (char*)this + v. Copying an OffsetPtr recomputes the distance.
/// Why INTPTR_MIN: every other value is the distance to some valid target — 0 is an OffsetPtr that
/// points at the object it lives in (a one-element circular list), 1 a T with alignment 1 right
/// after it — but a distance of -2^63 needs two addresses 2^63 apart, one of them in the kernel
/// half of the address space, which no object of a user process is in (static_assert below: user
/// addresses are below 2^63 on every 64-bit target Linux runs shmkit on). Zero-filled memory
/// therefore reads as a pointer to itself, not as null: construct OffsetPtrs, do not memset them.
#pragma once

#include <cstddef>
#include <cstdint>
#include <limits>
#include <type_traits>

namespace shmkit {

template <class T>
class OffsetPtr {
 public:
  OffsetPtr() noexcept = default;
  OffsetPtr(std::nullptr_t) noexcept {}
  OffsetPtr(T* p) noexcept { set(p); }
  OffsetPtr(const OffsetPtr& o) noexcept { set(o.get()); }
  OffsetPtr& operator=(const OffsetPtr& o) noexcept { set(o.get()); return *this; }
  OffsetPtr& operator=(T* p) noexcept { set(p); return *this; }

  T* get() const noexcept {
    if (diff_ == kNull) return nullptr;
    return reinterpret_cast<T*>(reinterpret_cast<std::uintptr_t>(this) + static_cast<std::uintptr_t>(diff_));
  }
  T* operator->() const noexcept { return get(); }
  std::add_lvalue_reference_t<T> operator*() const noexcept { return *get(); }
  explicit operator bool() const noexcept { return diff_ != kNull; }
  friend bool operator==(const OffsetPtr& a, const OffsetPtr& b) noexcept { return a.get() == b.get(); }

 private:
  static constexpr std::intptr_t kNull = std::numeric_limits<std::intptr_t>::min();
  void set(T* p) noexcept {
    diff_ = p == nullptr ? kNull
                         : static_cast<std::intptr_t>(reinterpret_cast<std::uintptr_t>(p) -
                                                      reinterpret_cast<std::uintptr_t>(this));
  }
  std::intptr_t diff_ = kNull;
};

static_assert(sizeof(OffsetPtr<int>) == sizeof(std::intptr_t));
static_assert(sizeof(void*) == 8, "the null sentinel assumes 64-bit addresses (user half below 2^63)");
static_assert(std::is_standard_layout_v<OffsetPtr<int>>);

}  // namespace shmkit
