// SegmentRef: this process's one handle on a segment mapping, shared (std::shared_ptr) by the
// Python Segment object and by every Python object that lives in the segment (locks, arrays,
// queues), so the mapping stays mapped while any of them exists.
//
// One SegmentRef per mapping per process: the heap binds one Heap object to one shmkit::Segment
// object (Heap::attach), so a second open of a mapping that is already open here returns the
// existing SegmentRef instead of a second Segment with a competing Heap.
//
// close() is deferred: it marks the handle closed (new operations raise ValueError) and unmaps
// at once only when nothing else uses the mapping; otherwise the unmap happens when the last
// object using it goes away. A lock held by this process therefore never loses its mapping (the
// kernel writes to a dead owner's lock word through the robust list).
#pragma once

#include <pybind11/pybind11.h>

#include <memory>
#include <string>

#include "shmkit/heap/heap.hpp"
#include "shmkit/shm/segment.hpp"

namespace shmkit::python {

class SegmentRef {
 public:
  explicit SegmentRef(Segment&& seg) : seg_(std::move(seg)) {}
  SegmentRef(const SegmentRef&) = delete;
  SegmentRef& operator=(const SegmentRef&) = delete;
  ~SegmentRef() { release_mapping(); }

  /// Returns this process's SegmentRef for the mapping `seg` refers to; a second Segment of an
  /// already open mapping is closed and the existing handle returned.
  static std::shared_ptr<SegmentRef> adopt(Segment&& seg);

  /// Raises ValueError when close() was called.
  Segment& segment() {
    check_open();
    return seg_;
  }
  /// The segment's heap (created in the segment on first use).
  Heap& heap();
  void check_open() const {
    if (closed_) throw pybind11::value_error("shmkit: the segment is closed");
  }
  bool closed() const noexcept { return closed_; }
  /// Marks closed; unmaps now when `only_user` (nothing else shares this handle).
  void close(bool only_user) noexcept;
  /// The raw segment, also when closed (for name/fd reporting and release()).
  const Segment& raw() const noexcept { return seg_; }

 private:
  void release_mapping() noexcept;
  Segment seg_;
  Heap* heap_ = nullptr;
  bool closed_ = false;
};
using SegmentPtr = std::shared_ptr<SegmentRef>;

/// The Python error types (shmkit.errors) and the translation of shmkit::Error into them.
void register_errors(pybind11::module_& m);
/// Raises the Python exception `name` of shmkit.errors with `message`.
[[noreturn]] void raise_error(const char* name, const std::string& message);
/// Converts a timeout in seconds (None = no deadline) into a deadline; ValueError when negative
/// or NaN.
sys::Deadline deadline_from(const pybind11::object& timeout);
/// Waits in slices with the GIL released, re-taking it between slices to run signal handlers
/// (so Ctrl-C interrupts a blocking call). `attempt(slice_deadline)` returns true when done.
template <class Attempt>
void wait_interruptibly(sys::Deadline deadline, Attempt&& attempt);

void bind_segment(pybind11::module_& m);
void bind_locks(pybind11::module_& m);
void bind_array(pybind11::module_& m);
void bind_queue(pybind11::module_& m);

// ---- template definitions ----

template <class Attempt>
void wait_interruptibly(sys::Deadline deadline, Attempt&& attempt) {
  constexpr auto kSlice = std::chrono::milliseconds(50);
  for (;;) {
    bool done = false;
    {
      pybind11::gil_scoped_release nogil;
      const auto now = sys::Clock::now();
      const sys::Deadline slice = deadline - now > kSlice ? now + kSlice : deadline;
      done = attempt(slice);
    }
    if (done || sys::Clock::now() >= deadline) return;
    if (PyErr_CheckSignals() != 0) throw pybind11::error_already_set();
  }
}

}  // namespace shmkit::python
