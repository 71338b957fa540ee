// The extension module shmkit._shmkit; the package shmkit (python/shmkit/) re-exports it and adds
// pickling, the pickle layer of Queue and the WorkerPool.
#include "segment_ref.hpp"

PYBIND11_MODULE(_shmkit, m) {
  m.doc() = "shmkit: shared memory at a fixed address, robust locks, queues and shared arrays";
  shmkit::python::register_errors(m);
  shmkit::python::bind_segment(m);
  shmkit::python::bind_locks(m);
  shmkit::python::bind_array(m);
  shmkit::python::bind_queue(m);
}
