"""shmkit.Segment from Python: the four ways to make one, the errors they raise, and pickling
(a named segment by name, an anonymous one by file descriptor) under every start method."""

import pickle

import pytest

import helpers
import shmkit
from conftest import unique_name


def test_create_open_and_errors(segment):
    assert segment.size >= 4 << 20 and segment.at_home and segment.name.startswith("/shmkit_pytest_")
    with pytest.raises(shmkit.AlreadyExists):
        shmkit.Segment.create(segment.name, 1 << 20)
    again = shmkit.Segment.open(segment.name)
    assert again.base == segment.base  # one mapping per process, at the same address
    with pytest.raises(shmkit.NotFound) as e:
        shmkit.Segment.open(unique_name("absent"))
    assert isinstance(e.value, FileNotFoundError) and isinstance(e.value, LookupError) and "absent" in str(e.value)


def test_open_or_create_and_anonymous():
    name = unique_name("ooc")
    a = shmkit.Segment.open_or_create(name, 1 << 20)
    try:
        b = shmkit.Segment.open_or_create(name, 1 << 20)
        assert a.base == b.base
    finally:
        shmkit.Segment.remove(name)
        a.close()
    anon = shmkit.Segment.create_anonymous(1 << 20)
    assert anon.name == "" and anon.fd >= 0
    with pytest.raises(ValueError):
        anon.unlink()
    anon.close()
    assert anon.closed
    with pytest.raises(ValueError, match="closed"):
        anon.size


def test_close_is_deferred_while_objects_use_it(segment):
    lock = shmkit.Lock(segment, "deferred")
    segment.close()
    with pytest.raises(ValueError, match="closed"):
        lock.acquire()
    with pytest.raises(ValueError, match="closed"):
        shmkit.Lock(segment, "other")


@pytest.mark.parametrize("anonymous", [False, True])
def test_pickled_segment_reaches_every_start_method(ctx, children, anonymous):
    seg = shmkit.Segment.create_anonymous(1 << 20) if anonymous else shmkit.Segment.create(unique_name("pk"), 1 << 20)
    try:
        memoryview(shmkit.SharedArray(seg, "data", 16))[:4] = b"abcd"
        out = ctx.Queue()
        p = children.start(ctx, helpers.segment_name_and_value, seg, out)
        name, value = out.get(timeout=60)
        children.join_ok(p)
        assert value == b"abcd"
        assert name == seg.name
    finally:
        if not anonymous:
            seg.unlink()
        seg.close()


def test_pickle_round_trip_in_process(segment):
    seg2 = pickle.loads(pickle.dumps(segment))
    assert seg2.base == segment.base
    anon = shmkit.Segment.create_anonymous(1 << 20)
    try:
        memoryview(shmkit.SharedArray(anon, "x", 8))[0] = 9
        anon2 = pickle.loads(pickle.dumps(anon))  # the descriptor travels through the resource sharer
        assert memoryview(shmkit.SharedArray(anon2, "x"))[0] == 9
    finally:
        anon.close()
