// shmkit.SharedArray: a named block of a segment's heap exposed through the buffer protocol, so
// memoryview(arr) and numpy.frombuffer(arr, dtype) see the shared bytes without a copy, in every
// process that opens the segment.
//
// Lifetime. A shared array (owned=False) lives until free() (by any process). An owned array
// (owned=True) is allocated with Heap::allocate_owned: when its creating process dies the heap
// reclaims the block, and the next lookup of the name finds the owner dead and drops the record
// (NotFound). Views in other processes must not outlive an owned array's owner.
// free() refuses while this process still has views (memoryviews, numpy arrays) of the array;
// views in other processes cannot be seen from here: free only when the peers are done.
// Creation, lookup and free of arrays are serialised by one named lock per segment
// (kArraysLock), so a stale record is dropped by exactly one process and never races a re-create.
#include "named_block.hpp"
#include "shmkit/locks/lock.hpp"
#include "shmkit/sys/error.hpp"

namespace py = pybind11;

namespace shmkit::python {

namespace {

constexpr std::uint64_t kArrayMagic = 0x3179617272414b53ULL;  // "SKArray1"
constexpr const char* kArraysLock = "shmkit.python.arrays";

struct ArrayRecord : BlockRecord {
  ArrayRecord(Heap& heap, std::uint64_t size, bool is_owned, const std::string& what) : BlockRecord{} {
    init_record(heap, *this, kArrayMagic, size, is_owned, what);
  }
};

// Holds the segment's array lock for the scope (owner death: the directory operations it guards
// are atomic on their own, so there is nothing to repair).
struct ArraysGuard {
  Lock* lock;
  explicit ArraysGuard(Heap& heap) : lock(heap.find_or_construct<Lock>(kArraysLock)) {
    LockResult r;
    {
      py::gil_scoped_release nogil;
      r = lock->acquire();
    }
    if (r == LockResult::owner_died) lock->mark_consistent();
    else if (r != LockResult::acquired)
      throw Error(Errc::not_recoverable, std::string("shmkit: the segment's lock ") + kArraysLock + " is not recoverable");
  }
  ~ArraysGuard() { lock->unlock(); }
  ArraysGuard(const ArraysGuard&) = delete;
  ArraysGuard& operator=(const ArraysGuard&) = delete;
};

// The record of `name`, or nullptr; drops the record of an owned array whose owner died (after
// letting the heap reclaim its block). Caller holds ArraysGuard.
ArrayRecord* live_record(Heap& heap, const std::string& name) {
  ArrayRecord* rec = heap.find<ArrayRecord>(name);
  if (rec == nullptr || rec->owned == 0 || sys::liveness(rec->owner) != sys::Liveness::dead) return rec;
  (void)heap.reclaim_dead();  // frees the dead owner's blocks, this array's among them
  (void)heap.destroy<ArrayRecord>(name);
  return nullptr;
}

struct SharedArray {
  SegmentPtr ref;
  std::string name;
  std::uint64_t data = 0;  // segment offset, as found at open
  std::uint64_t nbytes = 0;
  bool owned = false;
  bool freed = false;
  Py_ssize_t exports = 0;  // live buffer views in this process

  // Re-validates against the directory: the array may have been freed by another process (or its
  // owner died) since it was opened.
  std::byte* pointer() {
    if (freed) throw py::value_error("shmkit.SharedArray '" + name + "' was freed");
    Heap& heap = ref->heap();
    ArraysGuard g(heap);
    ArrayRecord* rec = live_record(heap, name);
    if (rec == nullptr || rec->data != data)
      raise_error("NotFound", "shmkit.SharedArray '" + name + "' no longer exists (freed by another process, "
                                  "or its owner died)");
    return block_of(*ref, *rec, kArrayMagic, "shmkit.SharedArray '" + name + "'");
  }
};

int get_buffer(PyObject* self, Py_buffer* view, int flags) {
  try {
    auto& a = py::handle(self).cast<SharedArray&>();
    std::byte* p = a.pointer();
    if (PyBuffer_FillInfo(view, self, p, static_cast<Py_ssize_t>(a.nbytes), 0, flags) != 0) return -1;
    ++a.exports;
    return 0;
  } catch (py::error_already_set& e) {
    e.restore();
  } catch (const Error& e) {
    PyErr_SetString(PyExc_BufferError, e.what());
  } catch (const std::exception& e) {
    PyErr_SetString(PyExc_BufferError, e.what());
  }
  view->obj = nullptr;
  return -1;
}

void release_buffer(PyObject* self, Py_buffer*) {
  auto& a = py::handle(self).cast<SharedArray&>();
  --a.exports;
}

}  // namespace

void bind_array(py::module_& m) {
  py::class_<SharedArray>(m, "SharedArray", py::custom_type_setup([](PyHeapTypeObject* type) {
                            type->as_buffer.bf_getbuffer = get_buffer;
                            type->as_buffer.bf_releasebuffer = release_buffer;
                            type->ht_type.tp_as_buffer = &type->as_buffer;
                          }),
                          R"doc(
NBYTES shared bytes named NAME in a segment's heap, zero-filled at creation; a writable buffer
(memoryview(arr), numpy.frombuffer(arr, dtype)) with no copy. Without nbytes it only finds an
existing array. owned=True: the heap reclaims it when the creating process dies.)doc")
      .def(py::init([](SegmentPtr seg, const std::string& name, py::object nbytes, bool owned) {
             Heap& heap = seg->heap();
             const std::string what = "shmkit.SharedArray '" + name + "'";
             std::uint64_t want = 0;
             if (!nbytes.is_none()) {
               if (!PyLong_Check(nbytes.ptr())) throw py::type_error(what + ": nbytes must be an int");
               const long long n = nbytes.cast<long long>();
               if (n <= 0) throw py::value_error(what + ": nbytes must be > 0, got " + std::to_string(n));
               want = static_cast<std::uint64_t>(n);
               if (want > seg->segment().capacity())
                 throw py::value_error(what + ": nbytes " + std::to_string(want) + " exceeds the segment's capacity " +
                                       std::to_string(seg->segment().capacity()));
             }
             ArraysGuard g(heap);
             ArrayRecord* rec = live_record(heap, name);
             if (rec == nullptr && want == 0) raise_error("NotFound", what + " does not exist");
             if (rec == nullptr) rec = heap.find_or_construct<ArrayRecord>(name, heap, want, owned, what);
             if (want != 0 && rec->nbytes != want)
               throw py::value_error(what + " exists with " + std::to_string(rec->nbytes) + " bytes, not " +
                                     std::to_string(want));
             (void)block_of(*seg, *rec, kArrayMagic, what);
             return SharedArray{std::move(seg), name, rec->data, rec->nbytes, rec->owned != 0};
           }),
           py::arg("segment"), py::arg("name"), py::arg("nbytes") = py::none(), py::kw_only(),
           py::arg("owned") = false)
      .def("free", [](SharedArray& a) {
        if (a.freed) return;
        if (a.exports > 0)
          throw py::buffer_error("shmkit.SharedArray '" + a.name + "': " + std::to_string(a.exports) +
                                 " views of it are alive in this process; release them (del the memoryviews "
                                 "and numpy arrays) before free()");
        Heap& heap = a.ref->heap();
        ArraysGuard g(heap);
        ArrayRecord* rec = live_record(heap, a.name);
        a.freed = true;
        if (rec == nullptr || rec->data != a.data) return;  // already freed elsewhere
        std::byte* p = block_of(*a.ref, *rec, kArrayMagic, "shmkit.SharedArray '" + a.name + "'");
        // Record first: a death between the two leaks the block instead of leaving a record that
        // names a freed one.
        (void)heap.destroy<ArrayRecord>(a.name);
        if (heap.deallocate(p) != HeapStatus::ok)
          throw Error(Errc::corrupt, "shmkit.SharedArray '" + a.name + "': its block could not be freed");
      }, "Frees the array for every process (the name can be created again).")
      .def("__len__", [](const SharedArray& a) { return a.nbytes; })
      .def_property_readonly("nbytes", [](const SharedArray& a) { return a.nbytes; })
      .def_property_readonly("name", [](const SharedArray& a) { return a.name; })
      .def_property_readonly("owned", [](const SharedArray& a) { return a.owned; })
      .def_property_readonly("freed", [](const SharedArray& a) { return a.freed; })
      .def_property_readonly("segment", [](const SharedArray& a) { return a.ref; });
}

/// For the queue's receipts: a validated pointer to bytes [off, off+len) of a SharedArray.
std::byte* shared_array_bytes(py::handle array, std::uint64_t off, std::uint64_t len, SegmentRef*& seg) {
  auto& a = array.cast<SharedArray&>();
  if (off > a.nbytes || len > a.nbytes - off)
    throw py::value_error("shmkit: bytes " + std::to_string(off) + ".." + std::to_string(off + len) +
                          " are outside SharedArray '" + a.name + "' of " + std::to_string(a.nbytes) + " bytes");
  seg = a.ref.get();
  return a.pointer() + off;
}

}  // namespace shmkit::python
