/// OffsetPtr<T>: a pointer stored as the distance from its own address to the target (iceoryx's
/// relative pointer, Boost.Interprocess's offset_ptr). It stays valid when the segment is mapped at
/// another base in another process, because both the pointer and its target move together.
///
/// Encoding: diff == 1 means null (1 can never be a valid distance to a T aligned to >= 2 that is
/// not the pointer itself... and a T at this+1 is not representable for alignof(T) > 1); any other
/// value v means target = (char*)this + v. Copying an OffsetPtr recomputes the distance.
#pragma once

#include <cstddef>
#include <cstdint>
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
  static constexpr std::intptr_t kNull = 1;
  void set(T* p) noexcept {
    diff_ = p == nullptr ? kNull
                         : static_cast<std::intptr_t>(reinterpret_cast<std::uintptr_t>(p) -
                                                      reinterpret_cast<std::uintptr_t>(this));
  }
  std::intptr_t diff_ = kNull;
};

static_assert(sizeof(OffsetPtr<int>) == sizeof(std::intptr_t));
static_assert(std::is_standard_layout_v<OffsetPtr<int>>);

}  // namespace shmkit
