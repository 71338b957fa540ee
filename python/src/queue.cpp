// shmkit.Queue: a named multi-producer multi-consumer queue of bytes messages in a segment's heap
// (the C++ Queue), with timeouts; shmkit.PopReceipt: a slot in shared memory that a pop records
// the message's position in, inside the queue's critical section, so that a consumer's death
// after taking a message is observable (the Python WorkerPool builds on it).
//
// Hot paths hold the GIL and try once (try_push / try_pop); only when that would block do they
// release the GIL and block, in slices so that signals are handled.
#include <queue>

#include "fast_method.hpp"
#include "named_block.hpp"
#include "shmkit/sys/error.hpp"
#include "shmkit/channels/queue.hpp"

namespace py = pybind11;

namespace shmkit::python {

std::byte* shared_array_bytes(py::handle array, std::uint64_t off, std::uint64_t len, SegmentRef*& seg);

namespace {

using CQueue = shmkit::Queue;

constexpr std::uint64_t kQueueMagic = 0x3165756575514b50ULL;  // "PKQueue1"

struct QueueRecord : BlockRecord {
  QueueRecord(Heap& heap, std::uint64_t ring_bytes, std::uint32_t max_message, const std::string& what)
      : BlockRecord{} {
    init_record(heap, *this, kQueueMagic, CQueue::required_bytes(ring_bytes), false, what);
    param = max_message;
    void* mem = heap.base() + data;  // init_record just allocated it
    try {
      (void)CQueue::create(mem, nbytes, max_message);
    } catch (...) {
      (void)heap.deallocate(mem);
      throw;
    }
  }
};

struct Receipt {
  SegmentPtr ref;
  PopReceipt* slot = nullptr;
};

struct NamedQueue {
  SegmentPtr ref;
  std::string name;
  CQueue q;
  std::size_t receipt_limit = 0;  // segment bytes the queue accepts receipts in (size at attach)

  void attach(std::byte* mem, std::size_t bytes) {
    receipt_limit = ref->segment().size();
    q = CQueue::attach(mem, bytes, {ref->segment().base(), receipt_limit});
  }
};

std::vector<std::byte>& pop_buffer(std::size_t n) {
  thread_local std::vector<std::byte> buf;
  if (buf.size() < n) buf.resize(n);
  return buf;
}

[[noreturn]] void raise_status(const NamedQueue& nq, QueueStatus s, const char* op) {
  const std::string what = "shmkit.Queue '" + nq.name + "' " + op;
  switch (s) {
    case QueueStatus::closed: raise_error("Closed", what + ": the queue is closed");
    case QueueStatus::too_large:
      throw py::value_error(what + ": message larger than max_message " + std::to_string(nq.q.max_message()));
    case QueueStatus::not_recoverable:
      raise_error("NotRecoverable", what + ": a lock of the queue was left unrepaired");
    case QueueStatus::timed_out:
      if (std::string_view(op) == "push") PyErr_SetNone(py::module_::import("queue").attr("Full").ptr());
      else PyErr_SetNone(py::module_::import("queue").attr("Empty").ptr());
      throw py::error_already_set();
    default: raise_error("Corrupt", what + ": " + to_string(s));
  }
}

// The bytes of a buffer-protocol object (bytes, bytearray, memoryview, numpy array ...).
struct Bytes {
  Py_buffer view{};
  explicit Bytes(py::handle obj) {
    if (PyObject_GetBuffer(obj.ptr(), &view, PyBUF_SIMPLE) != 0) throw py::error_already_set();
  }
  ~Bytes() { PyBuffer_Release(&view); }
  Bytes(const Bytes&) = delete;
  Bytes& operator=(const Bytes&) = delete;
  std::span<const std::byte> span() const { return {static_cast<const std::byte*>(view.buf), static_cast<std::size_t>(view.len)}; }
};

std::uint64_t push(NamedQueue& nq, py::handle data, const py::object& timeout, bool try_only) {
  nq.ref->check_open();
  Bytes b(data);
  const sys::Deadline deadline = deadline_from(timeout);  // checks it before anything happens
  QueueResult r = nq.q.try_push(b.span());
  if (r.status == QueueStatus::would_block && !try_only) {
    wait_interruptibly(deadline, [&](sys::Deadline slice) {
      r = nq.q.push(b.span(), slice);
      return r.status != QueueStatus::timed_out;
    });
  }
  if (r.status == QueueStatus::ok) return r.pos;
  if (try_only && r.status == QueueStatus::would_block) return 0;
  raise_status(nq, r.status, "push");
}

PopReceipt* receipt_slot(NamedQueue& nq, Receipt* receipt) {
  PopReceipt* slot = receipt != nullptr ? receipt->slot : nullptr;
  if (slot != nullptr && nq.ref->segment().offset_of(slot) + sizeof(PopReceipt) > nq.receipt_limit) {
    // The receipt was allocated after the segment grew past what this attach accepts.
    nq.attach(reinterpret_cast<std::byte*>(nq.q.control()), nq.q.control()->total_bytes);
  }
  return slot;
}

std::span<std::byte> pop_span(const NamedQueue& nq) {
  return {pop_buffer(nq.q.max_message()).data(), nq.q.max_message()};
}

PyObject* to_bytes(std::span<const std::byte> out, std::uint32_t size) {
  return PyBytes_FromStringAndSize(reinterpret_cast<const char*>(out.data()), static_cast<Py_ssize_t>(size));
}

py::object pop(NamedQueue& nq, const py::object& timeout, bool try_only, Receipt* receipt) {
  nq.ref->check_open();
  PopReceipt* slot = receipt_slot(nq, receipt);
  std::span<std::byte> out = pop_span(nq);
  const sys::Deadline deadline = deadline_from(timeout);  // checks it before anything happens
  QueueResult r = nq.q.try_pop(out, slot);
  if (r.status == QueueStatus::would_block && !try_only) {
    wait_interruptibly(deadline, [&](sys::Deadline slice) {
      r = nq.q.pop(out, slice, slot);
      return r.status != QueueStatus::timed_out;
    });
  }
  if (r.status == QueueStatus::ok) {
    if (r.size > out.size()) raise_status(nq, QueueStatus::corrupt, "pop");
    return py::reinterpret_steal<py::object>(to_bytes(out, r.size));
  }
  if (try_only && r.status == QueueStatus::would_block) return py::none();
  raise_status(nq, r.status, "pop");
}

// The fast methods (fast_method.hpp): push(data), try_push(data), pop([timeout[, receipt]]),
// try_pop() try once with the GIL held and hand everything else (blocking, errors, keywords) to
// the full methods _push, _try_push, _pop, _try_pop.
struct FastQueue {
  static inline PyObject* slow_push = nullptr;
  static inline PyObject* slow_try_push = nullptr;
  static inline PyObject* slow_pop = nullptr;
  static inline PyObject* slow_try_pop = nullptr;
  static inline PyTypeObject* receipt_type = nullptr;

  // try_push of args[0]; ok: 1 (pos set), would_block: 0, anything else (errors too): -1
  // with no Python error set (the full method reports it).
  static int try_push(NamedQueue* q, PyObject* data, std::uint64_t& pos) noexcept {
    if (q->ref->closed()) return -1;
    Py_buffer view;
    if (PyObject_GetBuffer(data, &view, PyBUF_SIMPLE) != 0) {
      PyErr_Clear();
      return -1;
    }
    QueueResult r = q->q.try_push({static_cast<const std::byte*>(view.buf), static_cast<std::size_t>(view.len)});
    PyBuffer_Release(&view);
    pos = r.pos;
    return r.status == QueueStatus::ok ? 1 : r.status == QueueStatus::would_block ? 0 : -1;
  }
  static PyObject* push(PyObject* self, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) noexcept {
    auto* q = cpp_self<NamedQueue>(self);
    if (q == nullptr) return nullptr;
    std::uint64_t pos = 0;
    if (nargs == 1 && kwnames == nullptr && try_push(q, args[0], pos) == 1) return PyLong_FromUnsignedLongLong(pos);
    return forward_to_slow(self, slow_push, args, nargs, kwnames);
  }
  static PyObject* try_push_m(PyObject* self, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) noexcept {
    auto* q = cpp_self<NamedQueue>(self);
    if (q == nullptr) return nullptr;
    std::uint64_t pos = 0;
    if (nargs == 1 && kwnames == nullptr) {
      const int r = try_push(q, args[0], pos);
      if (r == 1) Py_RETURN_TRUE;
      if (r == 0) Py_RETURN_FALSE;
    }
    return forward_to_slow(self, slow_try_push, args, nargs, kwnames);
  }
  // try_pop; returns the bytes, Py_None (would_block; new reference), or nullptr with no error set
  // (anything else: the full method reports it).
  static PyObject* try_pop(NamedQueue* q, PyObject* receipt) noexcept {
    if (q->ref->closed()) return nullptr;
    Receipt* rc = nullptr;
    if (receipt != nullptr && receipt != Py_None) {
      if (!PyObject_TypeCheck(receipt, receipt_type)) return nullptr;
      rc = cpp_self<Receipt>(receipt);
      if (rc == nullptr) {
        PyErr_Clear();
        return nullptr;
      }
    }
    PyObject* out = guarded([&]() -> PyObject* {
      PopReceipt* slot = receipt_slot(*q, rc);
      std::span<std::byte> buf = pop_span(*q);
      QueueResult r = q->q.try_pop(buf, slot);
      if (r.status == QueueStatus::ok && r.size <= buf.size()) return to_bytes(buf, r.size);
      if (r.status == QueueStatus::would_block) Py_RETURN_NONE;
      return nullptr;
    });
    if (out == nullptr) PyErr_Clear();
    return out;
  }
  // A timeout the full method accepts (None or a number >= 0), so the fast path never hides a bad one.
  static bool timeout_ok(PyObject* t) noexcept {
    if (t == Py_None) return true;
    double v = -1;
    if (PyFloat_Check(t)) v = PyFloat_AS_DOUBLE(t);
    else if (PyLong_Check(t)) v = PyLong_AsDouble(t);
    if (v == -1 && PyErr_Occurred()) PyErr_Clear();
    return v >= 0;  // false for NaN too
  }
  static PyObject* pop(PyObject* self, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) noexcept {
    auto* q = cpp_self<NamedQueue>(self);
    if (q == nullptr) return nullptr;
    if (nargs <= 2 && kwnames == nullptr && (nargs == 0 || timeout_ok(args[0]))) {
      PyObject* r = try_pop(q, nargs == 2 ? args[1] : nullptr);
      if (r != nullptr && r != Py_None) return r;
      Py_XDECREF(r);
    }
    return forward_to_slow(self, slow_pop, args, nargs, kwnames);
  }
  static PyObject* try_pop_m(PyObject* self, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) noexcept {
    auto* q = cpp_self<NamedQueue>(self);
    if (q == nullptr) return nullptr;
    if (nargs <= 1 && kwnames == nullptr) {
      PyObject* r = try_pop(q, nargs == 1 ? args[0] : nullptr);
      if (r != nullptr) return r;
    }
    return forward_to_slow(self, slow_try_pop, args, nargs, kwnames);
  }

  static void install(py::handle cls, py::handle receipt_cls) {
    receipt_type = reinterpret_cast<PyTypeObject*>(receipt_cls.ptr());
    slow_push = PyUnicode_InternFromString("_push");
    slow_try_push = PyUnicode_InternFromString("_try_push");
    slow_pop = PyUnicode_InternFromString("_pop");
    slow_try_pop = PyUnicode_InternFromString("_try_pop");
    static PyMethodDef defs[] = {
        {"push", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(&push)), METH_FASTCALL | METH_KEYWORDS,
         "push(data, timeout=None): appends a bytes-like message; returns its position (unique in the queue's "
         "life). queue.Full when the timeout passes, shmkit.Closed when the queue is closed."},
        {"try_push", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(&try_push_m)),
         METH_FASTCALL | METH_KEYWORDS, "try_push(data): False when the queue is full (or another producer is inside push)."},
        {"pop", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(&pop)), METH_FASTCALL | METH_KEYWORDS,
         "pop(timeout=None, receipt=None): the next message (bytes). queue.Empty when the timeout passes, "
         "shmkit.Closed when the queue is closed and drained."},
        {"try_pop", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(&try_pop_m)),
         METH_FASTCALL | METH_KEYWORDS, "try_pop(receipt=None): the next message, or None when there is none right now."},
    };
    for (PyMethodDef& d : defs) add_fast_method(cls, &d);
  }
};

}  // namespace

void bind_queue(py::module_& m) {
  auto receipt_cls = py::class_<Receipt>(m, "PopReceipt", R"doc(
Where a pop records the position of the message it took (8 bytes at INDEX*8 of a SharedArray of
the queue's segment), written inside the queue's critical section: after a consumer dies, its
receipt tells whether it had taken a message, and which.)doc")
      .def(py::init([](py::handle array, std::uint64_t index) {
             SegmentRef* seg = nullptr;
             if (index > (1ull << 40)) throw py::value_error("shmkit.PopReceipt: index too large");
             std::byte* p = shared_array_bytes(array, index * sizeof(PopReceipt), sizeof(PopReceipt), seg);
             return Receipt{array.attr("segment").cast<SegmentPtr>(), reinterpret_cast<PopReceipt*>(p)};
           }),
           py::arg("array"), py::arg("index"))
      .def_property(
          "pos", [](const Receipt& r) { return r.slot->pos.load(std::memory_order_acquire); },
          [](Receipt& r, std::uint64_t v) { r.slot->pos.store(v, std::memory_order_release); },
          "Position of the last message popped with this receipt (0: none).");

  auto queue_cls = py::class_<NamedQueue>(m, "Queue", R"doc(
A bounded queue of bytes messages named NAME in a segment, between any processes. CAPACITY bytes
of ring; messages up to MAX_MESSAGE bytes. pop() raises queue.Empty and push() queue.Full when
the timeout passes, shmkit.Closed once the queue is closed (pop: closed and drained).)doc")
      .def(py::init([](SegmentPtr seg, const std::string& name, std::uint64_t capacity, std::uint32_t max_message,
                       bool create) {
             const std::string what = "shmkit.Queue '" + name + "'";
             if (max_message == 0) throw py::value_error(what + ": max_message must be > 0");
             if (capacity < CQueue::min_ring_bytes(max_message))
               throw py::value_error(what + ": capacity " + std::to_string(capacity) + " cannot hold two messages of " +
                                     std::to_string(max_message) + " bytes; give it at least " +
                                     std::to_string(CQueue::min_ring_bytes(max_message)));
             if (capacity > seg->segment().capacity())
               throw py::value_error(what + ": capacity exceeds the segment's capacity " +
                                     std::to_string(seg->segment().capacity()));
             Heap& heap = seg->heap();
             QueueRecord* rec = create ? heap.find_or_construct<QueueRecord>(name, heap, capacity, max_message, what)
                                       : heap.find<QueueRecord>(name);
             if (rec == nullptr) raise_error("NotFound", what + " does not exist");
             std::byte* mem = block_of(*seg, *rec, kQueueMagic, what);
             auto nq = std::make_unique<NamedQueue>();
             nq->ref = std::move(seg);
             nq->name = name;
             nq->attach(mem, rec->nbytes);
             return nq;
           }),
           py::arg("segment"), py::arg("name"), py::arg("capacity") = 1 << 20, py::arg("max_message") = 65536,
           py::kw_only(), py::arg("create") = true)
      .def("_push", [](NamedQueue& q, py::handle data, py::object timeout) { return push(q, data, timeout, false); },
           py::arg("data"), py::arg("timeout") = py::none())
      .def("_try_push", [](NamedQueue& q, py::handle data) { return push(q, data, py::none(), true) != 0; },
           py::arg("data"))
      .def("_pop",
           [](NamedQueue& q, py::object timeout, Receipt* receipt) { return pop(q, timeout, false, receipt); },
           py::arg("timeout") = py::none(), py::arg("receipt") = nullptr)
      .def("_try_pop", [](NamedQueue& q, Receipt* receipt) { return pop(q, py::none(), true, receipt); },
           py::arg("receipt") = nullptr)
      .def("close", [](NamedQueue& q) { q.q.close(); }, "Pushes fail from now on; pops drain, then raise Closed.")
      .def_property_readonly("closed", [](const NamedQueue& q) { return q.q.is_closed(); })
      .def("empty", [](const NamedQueue& q) { return q.q.empty(); })
      .def_property_readonly("max_message", [](const NamedQueue& q) { return q.q.max_message(); })
      .def_property_readonly("name", [](const NamedQueue& q) { return q.name; })
      .def_property_readonly("segment", [](const NamedQueue& q) { return q.ref; })
      .def("_consumer_repair_pending", [](const NamedQueue& q) {
        // A consumer died holding the consumer lock and nobody has taken it since: receipts may not
        // yet say what that consumer took (the next consumer's repair settles them).
        return (q.q.control()->consumer_lock.debug_word() & locks_detail::kOwnerDied) != 0;
      });
  FastQueue::install(queue_cls, receipt_cls);
}

}  // namespace shmkit::python
