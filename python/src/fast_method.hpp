// Methods on the hot paths (Lock.acquire/release, Queue.push/pop) as plain CPython
// METH_FASTCALL functions: pybind11's generic dispatch (argument conversion, overload resolution,
// keyword defaults) costs several hundred nanoseconds per call, more than the operation itself,
// and the benchmark goal is multiprocessing.Lock, whose methods are plain C functions.
// A fast method handles the common call (no arguments or one positional) itself and otherwise
// forwards to the pybind11 method of the same name with a leading underscore, which has the full
// signature and its checks.
#pragma once

#include <pybind11/pybind11.h>

namespace shmkit::python {

/// The C++ object of a pybind11 instance `self` of class T; nullptr (Python error set) when it has
/// none (a subclass whose __init__ did not call the base's).
template <class T>
T* cpp_self(PyObject* self) noexcept {
  auto* inst = reinterpret_cast<pybind11::detail::instance*>(self);
  void* p = nullptr;
  if (inst->simple_layout) {
    p = inst->simple_value_holder[0];
  } else {
    try {
      p = pybind11::handle(self).cast<T*>();
    } catch (...) {
      p = nullptr;
    }
  }
  if (p == nullptr) PyErr_SetString(PyExc_TypeError, "shmkit: object not initialised (call the base __init__)");
  return static_cast<T*>(p);
}

/// Calls self._<name>(*args, **kwargs): the full pybind11 method.
PyObject* forward_to_slow(PyObject* self, PyObject* slow_name, PyObject* const* args, Py_ssize_t nargs,
                          PyObject* kwnames) noexcept;

/// Installs `def` (static storage) as a method of the pybind11 class `cls`.
void add_fast_method(pybind11::handle cls, PyMethodDef* def);

/// Runs `fn` (which may throw pybind11 / C++ exceptions) and converts any exception into the
/// Python error pybind11 would have raised; returns nullptr then.
template <class Fn>
PyObject* guarded(Fn&& fn) noexcept {
  try {
    return fn();
  } catch (...) {
    // The translators pybind11's own dispatcher applies (ours for shmkit::Error included).
    auto& local = pybind11::detail::get_local_internals().registered_exception_translators;
    auto& global = pybind11::detail::get_internals().registered_exception_translators;
    if (!pybind11::detail::apply_exception_translators(local) &&
        !pybind11::detail::apply_exception_translators(global))
      PyErr_SetString(PyExc_RuntimeError, "shmkit: unknown C++ exception");
  }
  return nullptr;
}

}  // namespace shmkit::python
