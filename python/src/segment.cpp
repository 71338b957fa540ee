// shmkit.Segment: the Python face of shmkit::Segment (create/open/open_or_create/create_anonymous/
// adopt), one SegmentRef per mapping per process, and the heap behind named objects.
#include <pybind11/stl.h>

#include <map>

#include "segment_ref.hpp"
#include "shmkit/sys/error.hpp"

namespace py = pybind11;

namespace shmkit::python {

namespace {

// This process's handles by mapping base (plain process memory: a forked child inherits it with
// the mappings it describes). Guarded by the GIL: every caller holds it.
std::map<std::byte*, std::weak_ptr<SegmentRef>>& handles() {
  static auto* h = new std::map<std::byte*, std::weak_ptr<SegmentRef>>();  // never destroyed: used at exit
  return *h;
}

SegmentOptions options(std::size_t capacity, unsigned mode, double timeout, bool relocate) {
  if (mode > 0777) throw py::value_error("shmkit.Segment: mode must be a permission mask in 0..0o777");
  if (!(timeout >= 0) || timeout > 1e6) throw py::value_error("shmkit.Segment: timeout must be 0..1e6 seconds");
  SegmentOptions o;
  o.capacity = capacity;
  o.mode = static_cast<mode_t>(mode);
  o.relocate = relocate ? Relocate::allowed : Relocate::forbidden;
  o.open_timeout = std::chrono::milliseconds(static_cast<long long>(timeout * 1000));
  return o;
}

// Runs a segment-making call with the GIL released (open may wait for an initialising creator),
// then returns this process's handle for the result.
template <class Make>
SegmentPtr make(Make&& fn) {
  Segment seg;
  {
    py::gil_scoped_release nogil;
    seg = fn();
  }
  return SegmentRef::adopt(std::move(seg));
}

}  // namespace

SegmentPtr SegmentRef::adopt(Segment&& seg) {
  auto& h = handles();
  auto it = h.find(seg.base());
  if (it != h.end()) {
    if (SegmentPtr existing = it->second.lock(); existing && !existing->closed()) {
      seg.close();  // the mapping's reference count drops back; the existing handle keeps it
      return existing;
    }
  }
  auto ref = std::make_shared<SegmentRef>(std::move(seg));
  h[ref->seg_.base()] = ref;
  return ref;
}

Heap& SegmentRef::heap() {
  check_open();
  if (heap_ == nullptr) heap_ = &Heap::attach(seg_);
  return *heap_;
}

void SegmentRef::close(bool only_user) noexcept {
  if (!closed_) {
    closed_ = true;
    auto& h = handles();
    if (auto it = h.find(seg_.base()); it != h.end() && it->second.lock().get() == this) h.erase(it);
  }
  if (only_user) release_mapping();
}

void SegmentRef::release_mapping() noexcept {
  if (!seg_.valid()) return;
  // The Heap belongs to the mapping, not to this Segment object (heap.hpp): the last Segment of
  // the mapping to close gives back this process's caches and forgets it, through its close hook.
  // A later handle of the same mapping (after close()) shares it, so it is not detached here.
  heap_ = nullptr;
  seg_.close();
}

void bind_segment(py::module_& m) {
  py::class_<SegmentRef, SegmentPtr>(m, "Segment", R"doc(
A shared-memory segment mapped at the same address in every process.

Make one with Segment.create, Segment.open, Segment.open_or_create or Segment.create_anonymous.
It pickles as its name (anonymous segments: as a duplicated file descriptor), so it can be passed
to processes of every multiprocessing start method. close() unmaps once nothing in this process
uses the mapping any more; unlink() removes the name.)doc")
      .def_static(
          "create",
          [](const std::string& name, std::size_t size, std::size_t capacity, unsigned mode) {
            auto o = options(capacity, mode, 5.0, false);
            return make([&] { return Segment::create(name, size, o); });
          },
          py::arg("name"), py::arg("size"), py::kw_only(), py::arg("capacity") = 0, py::arg("mode") = 0600,
          "Creates /dev/shm/NAME (fails with AlreadyExists if it exists).")
      .def_static(
          "open",
          [](const std::string& name, bool relocate, double timeout) {
            auto o = options(0, 0600, timeout, relocate);
            return make([&] { return Segment::open(name, o); });
          },
          py::arg("name"), py::kw_only(), py::arg("relocate") = false, py::arg("timeout") = 5.0,
          "Opens an existing segment (NotFound if absent).")
      .def_static(
          "open_or_create",
          [](const std::string& name, std::size_t size, std::size_t capacity, unsigned mode) {
            auto o = options(capacity, mode, 5.0, false);
            return make([&] { return Segment::open_or_create(name, size, o); });
          },
          py::arg("name"), py::arg("size"), py::kw_only(), py::arg("capacity") = 0, py::arg("mode") = 0600)
      .def_static(
          "create_anonymous",
          [](std::size_t size, std::size_t capacity) {
            auto o = options(capacity, 0600, 5.0, false);
            return make([&] { return Segment::create_anonymous(size, o); });
          },
          py::arg("size"), py::kw_only(), py::arg("capacity") = 0,
          "A memfd segment: no name; reaches other processes by fork or by pickling (fd passing).")
      .def_static(
          "adopt",
          [](int fd) {
            if (fd < 0) throw py::value_error("shmkit.Segment.adopt: fd must be >= 0");
            return make([&] { return Segment::adopt(fd); });
          },
          py::arg("fd"), "Maps the segment whose descriptor is fd; takes ownership of fd (closes it).")
      .def_static("remove", [](const std::string& name) { Segment::remove(name); }, py::arg("name"),
                  "Unlinks /dev/shm/NAME; processes that mapped it keep their mapping.")
      .def("unlink", [](SegmentRef& s) {
        if (s.raw().name().empty()) throw py::value_error("shmkit.Segment.unlink: an anonymous segment has no name");
        Segment::remove(s.raw().name());
      })
      .def("close", [](py::object self) {
        // use_count: the Python object's own holder plus the local copy here.
        SegmentPtr p = self.cast<SegmentPtr>();
        p->close(p.use_count() <= 2);
      })
      .def("__enter__", [](py::object self) { return self; })
      .def("__exit__", [](py::object self, py::args) {
        SegmentPtr p = self.cast<SegmentPtr>();
        p->close(p.use_count() <= 2);
      })
      .def_property_readonly("closed", &SegmentRef::closed)
      .def_property_readonly("name", [](const SegmentRef& s) { return s.raw().name(); })
      .def_property_readonly("fd", [](SegmentRef& s) { return s.segment().fd(); })
      .def_property_readonly("size", [](SegmentRef& s) { return s.segment().size(); })
      .def_property_readonly("capacity", [](SegmentRef& s) { return s.segment().capacity(); })
      .def_property_readonly("base", [](SegmentRef& s) { return reinterpret_cast<std::uintptr_t>(s.segment().base()); })
      .def_property_readonly("at_home", [](SegmentRef& s) { return s.segment().at_home(); })
      .def("grow", [](SegmentRef& s, std::size_t size) { s.segment().grow(size); }, py::arg("size"))
      .def("names", [](SegmentRef& s) { return s.heap().names(); }, "Names of the segment's named objects.")
      .def("reclaim_dead", [](SegmentRef& s) { return s.heap().reclaim_dead(); },
           "Frees owned blocks of dead processes and their caches; returns how many.")
      .def("verify", [](SegmentRef& s) {
        std::vector<std::string> out;
        for (auto& f : s.heap().verify(VerifyMode::live)) out.push_back(f.message);
        return out;
      }, "Checks the heap; a list of findings (empty when consistent).")
      .def("heap_stats", [](SegmentRef& s) {
        HeapStats st = s.heap().stats();
        py::dict d;
        d["bytes_in_use"] = st.bytes_in_use;
        d["blocks_in_use"] = st.blocks_in_use;
        d["bytes_owned"] = st.bytes_owned;
        d["owned_reclaimed"] = st.owned_reclaimed;
        d["named_objects"] = st.named_objects;
        return d;
      })
      .def("__repr__", [](const SegmentRef& s) {
        if (s.closed()) return std::string("<shmkit.Segment closed>");
        return "<shmkit.Segment " + (s.raw().name().empty() ? std::string("(anonymous)") : s.raw().name()) +
               " size=" + std::to_string(s.raw().size()) + ">";
      });
}

}  // namespace shmkit::python
