#include "fast_method.hpp"

namespace shmkit::python {

PyObject* forward_to_slow(PyObject* self, PyObject* slow_name, PyObject* const* args, Py_ssize_t nargs,
                          PyObject* kwnames) noexcept {
  PyObject* slow = PyObject_GetAttr(self, slow_name);
  if (slow == nullptr) return nullptr;
  PyObject* r = PyObject_Vectorcall(slow, args, static_cast<std::size_t>(nargs), kwnames);
  Py_DECREF(slow);
  return r;
}

void add_fast_method(pybind11::handle cls, PyMethodDef* def) {
  PyObject* descr = PyDescr_NewMethod(reinterpret_cast<PyTypeObject*>(cls.ptr()), def);
  if (descr == nullptr) throw pybind11::error_already_set();
  const int r = PyObject_SetAttrString(cls.ptr(), def->ml_name, descr);
  Py_DECREF(descr);
  if (r != 0) throw pybind11::error_already_set();
}

}  // namespace shmkit::python
