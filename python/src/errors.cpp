// shmkit::Error -> the Python exception classes of shmkit.errors (one per Errc, each also deriving
// from the built-in exception a Python user would catch: ValueError, FileExistsError, ...), and
// the timeout conversion every blocking call shares.
#include <cmath>

#include "segment_ref.hpp"
#include "shmkit/sys/error.hpp"

namespace py = pybind11;

namespace shmkit::python {

namespace {

const char* class_for(Errc code) noexcept {
  switch (code) {
    case Errc::invalid_argument: return "InvalidArgument";
    case Errc::not_found: return "NotFound";
    case Errc::already_exists: return "AlreadyExists";
    case Errc::not_a_segment: return "NotASegment";
    case Errc::bad_magic: return "BadMagic";
    case Errc::version_mismatch: return "VersionMismatch";
    case Errc::corrupt: return "Corrupt";
    case Errc::address_in_use: return "AddressInUse";
    case Errc::out_of_memory: return "OutOfMemory";
    case Errc::owner_dead: return "OwnerDied";
    case Errc::not_recoverable: return "NotRecoverable";
    case Errc::timed_out: return "Timeout";
    case Errc::permission_denied: return "PermissionDenied";
    case Errc::peer_closed: return "PeerClosed";
    case Errc::protocol: return "ProtocolError";
    case Errc::unsupported: return "Unsupported";
    case Errc::ok:
    case Errc::system: break;
  }
  return "Error";
}

void set_python_error(const char* cls_name, const std::string& message, int err, Errc code) {
  py::object cls = py::module_::import("shmkit.errors").attr(cls_name);
  py::object exc = cls(message);
  if (err != 0) exc.attr("errno") = err;
  exc.attr("code") = std::string(to_string(code));
  PyErr_SetObject(cls.ptr(), exc.ptr());
}

}  // namespace

void raise_error(const char* name, const std::string& message) {
  set_python_error(name, message, 0, Errc::ok);
  throw py::error_already_set();
}

sys::Deadline deadline_from(const py::object& timeout) {
  if (timeout.is_none()) return sys::kNoDeadline;
  if (!PyFloat_Check(timeout.ptr()) && !PyLong_Check(timeout.ptr()))
    throw py::type_error("shmkit: timeout must be a number of seconds or None, not " +
                         std::string(py::str(py::type::handle_of(timeout).attr("__name__"))));
  const double seconds = timeout.cast<double>();
  if (std::isnan(seconds) || seconds < 0)
    throw py::value_error("shmkit: timeout must be >= 0 seconds (or None to wait forever), got " +
                          std::string(py::str(timeout)));
  const auto now = sys::Clock::now();
  if (seconds > 1e9) return sys::kNoDeadline;  // ~31 years: no deadline
  return now + std::chrono::ceil<sys::Clock::duration>(std::chrono::duration<double>(seconds));
}

void register_errors(py::module_& m) {
  (void)m;
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const Error& e) {
      set_python_error(class_for(e.code()), e.what(), e.sys_errno(), e.code());
    }
  });
}

}  // namespace shmkit::python
