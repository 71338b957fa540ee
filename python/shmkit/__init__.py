"""shmkit for Python: shared memory at a fixed address, robust process-shared locks, a fast
queue, shared arrays and a worker pool that survives its workers.

    seg = shmkit.Segment.open_or_create("/counter", 1 << 20)
    lock = shmkit.Lock(seg, "counter.lock")          # found or constructed by name
    counts = numpy.frombuffer(shmkit.SharedArray(seg, "counts", 8), dtype=numpy.int64)
    try:
        lock.acquire()
    except shmkit.OwnerDied as died:                   # its holder was killed: we hold it now
        ...repair counts...
        died.mark_consistent()
    counts[0] += 1
    lock.release()

Every object pickles (segments by name, or by file descriptor when anonymous; objects in a
segment by segment and name), so they work with every multiprocessing start method.
"""

import pickle as _pickle

from . import _shmkit, pickling as _pickling
from ._shmkit import Condition, Lock, PopReceipt, Queue, RLock, Segment, SharedArray
from .errors import (AddressInUse, AlreadyExists, BadMagic, Closed, Corrupt, Error, InvalidArgument, NotASegment,
                     NotFound, NotRecoverable, OutOfMemory, OwnerDied, PeerClosed, PermissionDenied,
                     ProtocolError, Timeout, Unsupported, VersionMismatch, WorkerDied)
from .pool import Task, WorkerPool

__all__ = [
    "Segment", "Lock", "RLock", "Condition", "Queue", "PopReceipt", "SharedArray", "WorkerPool", "Task",
    "Error", "InvalidArgument", "NotFound", "AlreadyExists", "NotASegment", "BadMagic", "VersionMismatch", "Corrupt",
    "AddressInUse", "OutOfMemory", "OwnerDied", "NotRecoverable", "Timeout", "PermissionDenied",
    "PeerClosed", "ProtocolError", "Unsupported", "Closed", "WorkerDied",
]


def _put(self, obj, timeout=None):
    """Pickles obj and pushes it; returns the message's position."""
    return self.push(_pickle.dumps(obj, _pickle.HIGHEST_PROTOCOL), timeout)


def _get(self, timeout=None):
    """Pops a message and unpickles it."""
    return _pickle.loads(self.pop(timeout))


def _wait_for(self, predicate, timeout=None):
    """Waits until predicate() is true (checked with the lock held); returns its last value."""
    import time
    end = None if timeout is None else time.monotonic() + timeout
    result = predicate()
    while not result:
        left = None if end is None else end - time.monotonic()
        if left is not None and left <= 0:
            break
        self.wait(left)
        result = predicate()
    return result


Queue.put = _put
Queue.get = _get
Condition.wait_for = _wait_for
_pickling.register(Queue)
