"""shmkit's exceptions: one per error code of the C++ library (shmkit::Errc), each also deriving
from the built-in exception a Python program would catch for it (ValueError, FileExistsError, ...).

Every shmkit.Error has ``code`` (the Errc name, e.g. "not_found") and ``errno`` (0 when no system
call failed). The message says what went wrong and what to do.
"""


class Error(OSError):
    """Base of shmkit's errors (a failed set-up call of the C++ library)."""

    code = "system"

    def __init__(self, message="", *args):
        super().__init__(message, *args)
        self.errno = 0


class InvalidArgument(Error, ValueError):
    code = "invalid_argument"


class NotFound(Error, FileNotFoundError, LookupError):
    code = "not_found"


class AlreadyExists(Error, FileExistsError):
    code = "already_exists"


class NotASegment(Error):
    code = "not_a_segment"


class BadMagic(Error):
    """The memory given does not hold the object asked for (a Queue, a Channel)."""

    code = "bad_magic"


class VersionMismatch(Error):
    code = "version_mismatch"


class Corrupt(Error):
    code = "corrupt"


class AddressInUse(Error):
    code = "address_in_use"


class OutOfMemory(Error, MemoryError):
    code = "out_of_memory"


class NotRecoverable(Error):
    """A dead owner's lock (or state) was released without repair; it cannot be used any more."""

    code = "not_recoverable"


class Timeout(Error, TimeoutError):
    code = "timed_out"


class PermissionDenied(Error, PermissionError):
    code = "permission_denied"


class PeerClosed(Error, ConnectionError):
    code = "peer_closed"


class ProtocolError(Error):
    code = "protocol"


class Unsupported(Error):
    code = "unsupported"


class Closed(Error):
    """The queue (or pool) is closed."""

    code = "closed"


class OwnerDied(Error):
    """The previous owner of a lock died holding it (or a segment's creator died initialising it).

    Raised by ``acquire()`` (and ``with lock:``, ``Condition.wait()``) WITH THE LOCK HELD by the
    calling thread: the data the lock protects may be half-updated. Repair it, call
    ``mark_consistent()``, and continue as after a normal acquire (``release()`` when done).
    Releasing without ``mark_consistent()`` makes the lock not recoverable for everyone.
    """

    code = "owner_dead"

    def __init__(self, message="", lock=None):
        super().__init__(message)
        self.lock = lock

    def mark_consistent(self):
        """The data is repaired: the lock stays held by this thread, now consistent."""
        if self.lock is None:
            raise ValueError("shmkit.OwnerDied: no lock to mark consistent (a segment's creator died)")
        self.lock.mark_consistent()

    def release(self):
        """Releases the lock (after mark_consistent(), or to give up: then not recoverable)."""
        if self.lock is None:
            raise ValueError("shmkit.OwnerDied: no lock to release")
        self.lock.release()

    def __reduce__(self):
        return (type(self), (str(self),))


class WorkerDied(Error):
    """A WorkerPool task's worker died while running it (and no retry was left)."""

    code = "worker_died"
