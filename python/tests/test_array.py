"""shmkit.SharedArray: the same bytes seen from two processes (numpy.frombuffer and memoryview,
no copy) under every start method; free(); an owned array reclaimed when its owner is killed."""

import time

import numpy
import pytest

import helpers
import shmkit


def test_array_seen_from_two_processes(ctx, children, segment):
    arr = shmkit.SharedArray(segment, "grid", 8 * 1000)
    a = numpy.frombuffer(arr, dtype=numpy.float64)
    assert (a == 0).all()  # zero-filled at creation
    p = children.start(ctx, helpers.write_array, arr, 2.5)
    children.join_ok(p)
    assert (a == 2.5).all()  # the child's writes, through our view: no copy
    a[:] = 7.0
    p = children.start(ctx, helpers.read_array_and_check, arr, 7.0)
    children.join_ok(p)


def test_views_free_and_recreate(segment):
    arr = shmkit.SharedArray(segment, "tmp", 32)
    assert len(arr) == 32 and arr.nbytes == 32
    same = shmkit.SharedArray(segment, "tmp")  # found by name
    mv = memoryview(same)
    mv[3] = 42
    assert memoryview(arr)[3] == 42
    with pytest.raises(BufferError, match="views"):
        same.free()
    mv.release()
    same.free()
    assert same.freed
    with pytest.raises(shmkit.NotFound):
        memoryview(arr)  # freed by another handle: no view of freed memory
    with pytest.raises(shmkit.NotFound):
        shmkit.SharedArray(segment, "tmp")
    again = shmkit.SharedArray(segment, "tmp", 64)
    assert again.nbytes == 64 and bytes(memoryview(again)) == bytes(64)
    with pytest.raises(ValueError, match="exists with 64 bytes"):
        shmkit.SharedArray(segment, "tmp", 128)


def test_owned_array_reclaimed_when_owner_killed(ctx, children, segment):
    ready = ctx.Event()
    p = children.start(ctx, helpers.own_array_then_wait, segment, "mine", 1 << 16, ready)
    assert ready.wait(60)
    seen = shmkit.SharedArray(segment, "mine")
    assert seen.owned and memoryview(seen)[0] == 7
    before = segment.heap_stats()["bytes_owned"]
    assert before >= 1 << 16
    children.kill(p)
    with pytest.raises(shmkit.NotFound, match="no longer exists"):
        memoryview(seen)
    assert segment.heap_stats()["bytes_owned"] <= before - (1 << 16)
    assert "mine" not in segment.names()
    assert segment.verify() == []
