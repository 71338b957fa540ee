// shmkit.Lock, shmkit.RLock and shmkit.Condition: named robust locks in a segment's heap (the
// same named objects a C++ program gets with heap.find_or_construct<shmkit::Lock>(name)).
//
// Owner death: acquire() raises shmkit.OwnerDied WITH THE LOCK HELD (the C++ owner_died result);
// the exception carries the lock: repair the data, call mark_consistent() on it, and continue as
// after a normal acquire (release() when done). A release without mark_consistent() makes the lock
// not recoverable: later acquires raise shmkit.NotRecoverable.
#include "fast_method.hpp"
#include "segment_ref.hpp"
#include "shmkit/locks/lock.hpp"
#include "shmkit/sys/error.hpp"

namespace py = pybind11;

namespace shmkit::python {

namespace {

template <class L>
struct NamedLock {
  SegmentPtr ref;
  L* lock = nullptr;
  std::string name;

  NamedLock(SegmentPtr r, L* l, std::string n) : ref(std::move(r)), lock(l), name(std::move(n)) {}
  NamedLock(const NamedLock&) = delete;
  NamedLock& operator=(const NamedLock&) = delete;
  ~NamedLock() {
    // A lock this thread still holds must stay mapped (the kernel walks it at our death): keep the
    // mapping for the rest of the process's life rather than unmap under a held lock.
    if (lock != nullptr && lock->held_by_this_thread()) (void)new SegmentPtr(ref);
  }
};

template <class T>
T* find_named(const SegmentPtr& ref, const std::string& name, bool create, const char* what) {
  Heap& heap = ref->heap();
  T* p = create ? heap.find_or_construct<T>(name) : heap.find<T>(name);
  if (p == nullptr) raise_error("NotFound", std::string(what) + " '" + name + "' does not exist in the segment");
  return p;
}

// Raises OwnerDied (the caller holds `lock_obj`'s lock) or NotRecoverable.
[[noreturn]] void raise_dead_owner(bool owner_died, py::handle lock_obj, const std::string& name) {
  if (owner_died) {
    py::object cls = py::module_::import("shmkit.errors").attr("OwnerDied");
    py::object exc = cls("shmkit: the previous owner of lock '" + name +
                             "' died holding it; this thread holds it now: repair the data it protects, "
                             "call mark_consistent(), then continue (release() when done)",
                         lock_obj);
    PyErr_SetObject(cls.ptr(), exc.ptr());
    throw py::error_already_set();
  }
  raise_error("NotRecoverable", "shmkit: lock '" + name +
                                    "' is not recoverable: an owner died holding it and the next owner released "
                                    "it without mark_consistent()");
}

// What an acquire that ended with `r` returns (or raises).
template <class L>
bool settle(py::handle self, NamedLock<L>& l, LockResult r) {
  switch (r) {
    case LockResult::acquired: return true;
    case LockResult::timed_out:
    case LockResult::would_block: return false;
    case LockResult::owner_died:
      if constexpr (std::is_same_v<L, RLock>) {
        if (l.lock->depth() > 1) return true;  // an outer acquire of this thread repairs
      }
      raise_dead_owner(true, self, l.name);
    case LockResult::not_recoverable: raise_dead_owner(false, self, l.name);
  }
  return false;
}

template <class L>
bool acquire(py::handle self, NamedLock<L>& l, bool blocking, const py::object& timeout) {
  l.ref->check_open();
  const bool timeout_given = !timeout.is_none() && !(PyLong_Check(timeout.ptr()) && timeout.cast<long>() == -1);
  if (!blocking && timeout_given)
    throw py::value_error("shmkit: acquire(blocking=False) takes no timeout");
  if constexpr (std::is_same_v<L, Lock>) {
    if (l.lock->held_by_this_thread())
      throw py::value_error("shmkit.Lock '" + l.name +
                            "': this thread already holds it (Lock is not recursive; use shmkit.RLock)");
  }
  const sys::Deadline deadline = timeout_given ? deadline_from(timeout) : sys::kNoDeadline;  // checks it
  LockResult r = l.lock->try_acquire();
  if (r == LockResult::would_block && blocking) {
    wait_interruptibly(deadline, [&](sys::Deadline slice) {
      r = l.lock->acquire(slice);
      return r != LockResult::timed_out;
    });
  }
  return settle(self, l, r);
}

template <class L>
void release(NamedLock<L>& l) {
  if (!l.lock->held_by_this_thread())
    throw py::value_error("shmkit: release of lock '" + l.name + "', which this thread does not hold");
  l.lock->unlock();
}

template <class L>
py::class_<NamedLock<L>> bind_lock(py::module_& m, const char* cls, const char* doc) {
  using N = NamedLock<L>;
  return py::class_<N>(m, cls, doc)
      .def(py::init([cls](SegmentPtr seg, const std::string& name, bool create) {
             L* p = find_named<L>(seg, name, create, cls);
             return std::make_unique<N>(std::move(seg), p, name);
           }),
           py::arg("segment"), py::arg("name"), py::arg("create") = true,
           "Finds the lock NAME in the segment, or constructs it (create=True).")
      .def("_acquire",
           [](py::handle self, bool blocking, py::object timeout) {
             return acquire(self, self.cast<N&>(), blocking, timeout);
           },
           py::arg("blocking") = true, py::arg("timeout") = py::none())
      .def("_release", [](N& l) { release(l); })
      .def("mark_consistent", [](N& l) {
        if (!l.lock->held_by_this_thread())
          throw py::value_error("shmkit: mark_consistent() of lock '" + l.name + "', which this thread does not hold");
        l.lock->mark_consistent();
      }, "After OwnerDied, once the protected data is repaired.")
      .def("locked", [](const N& l) { return (l.lock->debug_word() & locks_detail::kTidMask) != 0; })
      .def_property_readonly("held", [](const N& l) { return l.lock->held_by_this_thread(); })
      .def_property_readonly("name", [](const N& l) { return l.name; })
      .def_property_readonly("segment", [](const N& l) { return l.ref; });
}

// The fast methods (fast_method.hpp): acquire() with no arguments, release(), __enter__, __exit__.
template <class L>
struct FastLock {
  using N = NamedLock<L>;
  static inline PyObject* slow_acquire = nullptr;  // interned "_acquire"

  // Returns 1 acquired, 0 not (would block: the caller takes the full path), -1 error set.
  static int try_fast(PyObject* self, N* l) noexcept {
    if (l->ref->closed()) return 0;
    // A Lock this thread holds already: would_block, and the full path raises.
    const LockResult r = l->lock->try_acquire();
    if (r == LockResult::acquired) return 1;
    if (r == LockResult::would_block) return 0;
    PyObject* ok = guarded([&] { return PyBool_FromLong(settle(self, *l, r)); });
    if (ok == nullptr) return -1;
    Py_DECREF(ok);
    return 1;
  }
  static PyObject* acquire(PyObject* self, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) noexcept {
    N* l = cpp_self<N>(self);
    if (l == nullptr) return nullptr;
    if (nargs == 0 && kwnames == nullptr) {
      const int r = try_fast(self, l);
      if (r < 0) return nullptr;
      if (r == 1) Py_RETURN_TRUE;
    }
    return forward_to_slow(self, slow_acquire, args, nargs, kwnames);
  }
  static PyObject* enter(PyObject* self, PyObject*) noexcept {
    N* l = cpp_self<N>(self);
    if (l == nullptr) return nullptr;
    const int r = try_fast(self, l);
    if (r < 0) return nullptr;
    if (r == 0) {
      PyObject* ok = forward_to_slow(self, slow_acquire, nullptr, 0, nullptr);
      if (ok == nullptr) return nullptr;
      Py_DECREF(ok);
    }
    Py_INCREF(self);
    return self;
  }
  static PyObject* release(PyObject* self, PyObject*) noexcept {
    N* l = cpp_self<N>(self);
    if (l == nullptr) return nullptr;
    return guarded([&] {
      l->lock->unlock();  // Error(invalid_argument) -> ValueError when this thread does not hold it
      Py_RETURN_NONE;
    });
  }
  static PyObject* exit(PyObject* self, PyObject* const*, Py_ssize_t) noexcept { return release(self, nullptr); }

  static void install(py::handle cls) {
    slow_acquire = PyUnicode_InternFromString("_acquire");
    static PyMethodDef defs[] = {
        {"acquire", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(&acquire)),
         METH_FASTCALL | METH_KEYWORDS,
         "acquire(blocking=True, timeout=None): True when acquired, False when the timeout passed (or "
         "blocking=False found it held). Raises OwnerDied, holding the lock, when its previous owner died "
         "holding it."},
        {"release", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(&release)), METH_NOARGS,
         "Releases the lock (ValueError when this thread does not hold it)."},
        {"__enter__", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(&enter)), METH_NOARGS, nullptr},
        {"__exit__", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(&exit)), METH_FASTCALL, nullptr},
    };
    for (PyMethodDef& d : defs) add_fast_method(cls, &d);
  }
};

struct NamedCondition {
  SegmentPtr ref;
  Condition* cond = nullptr;
  std::string name;
  py::object lock;  // a shmkit.Lock or shmkit.RLock
};

}  // namespace

void bind_locks(py::module_& m) {
  FastLock<Lock>::install(bind_lock<Lock>(m, "Lock", "A robust process-shared mutex, named in a segment."));
  FastLock<RLock>::install(
      bind_lock<RLock>(m, "RLock", "A robust process-shared recursive mutex, named in a segment.")
          .def_property_readonly("depth", [](const NamedLock<RLock>& l) { return l.lock->depth(); }));

  py::class_<NamedCondition>(m, "Condition", R"doc(
A process-shared condition variable named in a segment, used with a shmkit.Lock or shmkit.RLock.
Like every condition variable it can wake without a notify (at least once a second, so that
signals such as Ctrl-C are handled): wait in a loop, or use wait_for(predicate).)doc")
      .def(py::init([](SegmentPtr seg, const std::string& name, py::object lock, bool create) {
             if (!py::isinstance<NamedLock<Lock>>(lock) && !py::isinstance<NamedLock<RLock>>(lock))
               throw py::type_error("shmkit.Condition: lock must be a shmkit.Lock or shmkit.RLock");
             Condition* c = find_named<Condition>(seg, name, create, "Condition");
             return NamedCondition{std::move(seg), c, name, std::move(lock)};
           }),
           py::arg("segment"), py::arg("name"), py::arg("lock"), py::arg("create") = true)
      .def("wait",
           [](NamedCondition& c, py::object timeout) {
             c.ref->check_open();
             const sys::Deadline deadline = deadline_from(timeout);
             const sys::Deadline slice = std::min(deadline, sys::Clock::now() + std::chrono::seconds(1));
             WaitResult r = WaitResult::notified;
             bool is_rlock = py::isinstance<NamedLock<RLock>>(c.lock);
             auto* plain = is_rlock ? nullptr : c.lock.cast<NamedLock<Lock>*>();
             auto* rec = is_rlock ? c.lock.cast<NamedLock<RLock>*>() : nullptr;
             if (!(is_rlock ? rec->lock->held_by_this_thread() : plain->lock->held_by_this_thread()))
               throw py::value_error("shmkit.Condition.wait: this thread does not hold the condition's lock");
             {
               py::gil_scoped_release nogil;
               r = is_rlock ? c.cond->wait(*rec->lock, slice) : c.cond->wait(*plain->lock, slice);
             }
             if (r == WaitResult::owner_died || r == WaitResult::not_recoverable)
               raise_dead_owner(r == WaitResult::owner_died, c.lock,
                                is_rlock ? rec->name : plain->name);
             if (PyErr_CheckSignals() != 0) throw py::error_already_set();
             // A slice that ended before the caller's deadline is a spurious wake-up (True).
             return r == WaitResult::notified || slice < deadline;
           },
           py::arg("timeout") = py::none(),
           "Releases the lock, waits for a notify (or the timeout), re-acquires. False on timeout.")
      .def("notify", [](NamedCondition& c, int n) {
        if (n < 0) throw py::value_error("shmkit.Condition.notify: n must be >= 0");
        for (int i = 0; i < n; ++i) c.cond->notify_one();
      }, py::arg("n") = 1)
      .def("notify_all", [](NamedCondition& c) { c.cond->notify_all(); })
      .def_property_readonly("lock", [](const NamedCondition& c) { return c.lock; })
      .def_property_readonly("name", [](const NamedCondition& c) { return c.name; })
      .def_property_readonly("segment", [](const NamedCondition& c) { return c.ref; })
      .def("__enter__", [](py::object self) {
        self.attr("lock").attr("acquire")();
        return self;
      })
      .def("__exit__", [](py::object self, py::args) { self.attr("lock").attr("release")(); });
}

}  // namespace shmkit::python
