"""Bad arguments raise TypeError or ValueError (shmkit.InvalidArgument is a ValueError) with a
message; none crashes the interpreter."""

import pytest

import shmkit


@pytest.mark.parametrize("call", [
    lambda: shmkit.Segment.create(42, 1 << 20),
    lambda: shmkit.Segment.create("/x", "big"),
    lambda: shmkit.Segment.create("/x", -1),
    lambda: shmkit.Segment.open(None),
    lambda: shmkit.Segment.adopt("fd"),
    lambda: shmkit.WorkerPool("2"),
])
def test_type_errors(call):
    with pytest.raises(TypeError):
        call()


@pytest.mark.parametrize("name", ["", "no-slash", "/a/b", "/" + "n" * 300, "/nul\0byte"])
def test_bad_segment_names(name):
    with pytest.raises(ValueError):
        shmkit.Segment.create(name, 1 << 20)


def test_bad_values(segment):
    with pytest.raises(ValueError):
        shmkit.Segment.create_anonymous(0)
    with pytest.raises(ValueError):
        shmkit.Segment.adopt(-1)
    with pytest.raises(ValueError):
        shmkit.Segment.open(segment.name, timeout=-1)
    with pytest.raises(ValueError):
        shmkit.Lock(segment, "")
    with pytest.raises(ValueError):
        shmkit.Lock(segment, "n" * 1000)
    with pytest.raises(TypeError):
        shmkit.Lock("not a segment", "l")
    lock = shmkit.Lock(segment, "l")
    with pytest.raises(ValueError):
        lock.acquire(timeout=-5)
    with pytest.raises(ValueError):
        lock.acquire(blocking=False, timeout=1)
    with pytest.raises(TypeError):
        lock.acquire(timeout="soon")
    with pytest.raises(ValueError):
        lock.release()
    with pytest.raises(TypeError):
        shmkit.Condition(segment, "c", object())
    with pytest.raises(ValueError):
        shmkit.SharedArray(segment, "a", 0)
    with pytest.raises(ValueError):
        shmkit.SharedArray(segment, "a", -3)
    with pytest.raises(TypeError):
        shmkit.SharedArray(segment, "a", 1.5)
    with pytest.raises(ValueError):
        shmkit.SharedArray(segment, "a", 1 << 50)
    with pytest.raises(shmkit.NotFound):
        shmkit.SharedArray(segment, "a")
    with pytest.raises(ValueError):
        shmkit.Queue(segment, "q", capacity=10, max_message=64)
    with pytest.raises(ValueError):
        shmkit.Queue(segment, "q", max_message=0)
    q = shmkit.Queue(segment, "q", capacity=4096, max_message=64)
    with pytest.raises(TypeError):
        q.push("a str is not bytes")
    with pytest.raises(TypeError):
        q.push(12)
    with pytest.raises(TypeError):
        q.pop(receipt="r")
    with pytest.raises(ValueError):
        q.pop(timeout=float("nan"))
    with pytest.raises(ValueError):
        shmkit.PopReceipt(shmkit.SharedArray(segment, "r", 8), 1)
    with pytest.raises(ValueError):
        shmkit.WorkerPool(0)
    with pytest.raises(ValueError):
        shmkit.Lock(segment, "q")  # the name belongs to a queue: another type
