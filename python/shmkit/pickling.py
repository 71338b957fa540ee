"""How shmkit objects cross process boundaries with pickle (multiprocessing's spawn and
forkserver start methods, multiprocessing queues, ...).

A named Segment pickles as its name and is opened again on the other side (mapped at the same
address). An anonymous Segment pickles as a duplicate of its file descriptor
(multiprocessing.reduction.DupFd: handed to the child by the start method, or through
multiprocessing's resource sharer). Objects that live in a segment (locks, queues, arrays)
pickle as (segment, name) and are found by name on the other side. With the fork start method
nothing is pickled: the child inherits the mapping and the objects.
"""

import copyreg
from multiprocessing import reduction

from . import _shmkit


def _open_segment(name):
    return _shmkit.Segment.open(name)


def _adopt_segment(dupfd):
    return _shmkit.Segment.adopt(dupfd.detach())


def _reduce_segment(seg):
    if seg.closed:
        raise ValueError("shmkit: a closed Segment cannot be pickled")
    if seg.name:
        return (_open_segment, (seg.name,))
    # DupFd duplicates the descriptor for the receiver (start method or resource sharer); ours stays open.
    return (_adopt_segment, (reduction.DupFd(seg.fd),))


def _find(cls, segment, name, *extra):
    if cls is _shmkit.Condition:
        return cls(segment, name, extra[0], create=False)
    if cls is _shmkit.SharedArray:
        return cls(segment, name)
    return cls(segment, name, create=False)


def _reduce_named(obj):
    if isinstance(obj, _shmkit.Condition):
        return (_find, (_shmkit.Condition, obj.segment, obj.name, obj.lock))
    return (_find, (type(obj), obj.segment, obj.name))


def register(queue_class):
    copyreg.pickle(_shmkit.Segment, _reduce_segment)
    for cls in (_shmkit.Lock, _shmkit.RLock, _shmkit.Condition, _shmkit.SharedArray, queue_class):
        copyreg.pickle(cls, _reduce_named)
