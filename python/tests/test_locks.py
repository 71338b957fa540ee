"""shmkit.Lock, RLock and Condition: named in a segment, context managers, shared by processes
of every start method; the owner of a lock SIGKILLed while holding it (OwnerDied with the lock
held, mark_consistent(), and NotRecoverable when a repairer releases without it)."""

import threading
import time

import numpy
import pytest

import helpers
import shmkit


def test_lock_basics(segment):
    lock = shmkit.Lock(segment, "basic")
    assert not lock.locked()
    with lock:
        assert lock.locked() and lock.held
        with pytest.raises(ValueError, match="not recursive"):
            lock.acquire()
        assert shmkit.Lock(segment, "basic").locked()  # the same lock, found by name
    assert lock.acquire(timeout=1)
    lock.release()
    with pytest.raises(ValueError):
        lock.release()
    with pytest.raises(shmkit.NotFound):
        shmkit.Lock(segment, "never-made", create=False)


def test_lock_timeout_and_nonblocking_against_another_thread(segment):
    lock = shmkit.Lock(segment, "contended")
    held, done = threading.Event(), threading.Event()

    def holder():
        with lock:
            held.set()
            done.wait(30)

    t = threading.Thread(target=holder)
    t.start()
    try:
        assert held.wait(30)
        assert lock.acquire(blocking=False) is False
        start = time.monotonic()
        assert lock.acquire(timeout=0.2) is False
        assert time.monotonic() - start >= 0.15
    finally:
        done.set()
        t.join(30)
    assert lock.acquire(timeout=5)
    lock.release()


def test_rlock_recursion(segment):
    r = shmkit.RLock(segment, "re")
    with r:
        with r:
            assert r.depth == 2
        assert r.depth == 1
    assert r.depth == 0 and not r.locked()


def test_counter_under_lock_in_every_start_method(ctx, children, segment):
    lock = shmkit.Lock(segment, "count.lock")
    arr = shmkit.SharedArray(segment, "count", 8)
    procs = [children.start(ctx, helpers.add_under_lock, lock, arr, 500) for _ in range(3)]
    helpers.add_under_lock(lock, arr, 500)
    for p in procs:
        children.join_ok(p)
    assert numpy.frombuffer(arr, dtype=numpy.int64)[0] == 2000


def test_owner_sigkilled_while_holding(ctx, children, segment):
    lock = shmkit.Lock(segment, "victim.lock")
    flag_arr = shmkit.SharedArray(segment, "victim.flag", 16)
    flag = numpy.frombuffer(flag_arr, dtype=numpy.int64)
    p = children.start(ctx, helpers.hold_lock_forever, segment, "victim.lock", "victim.flag")
    deadline = time.monotonic() + 60
    while flag[1] != p.pid:
        assert time.monotonic() < deadline, "the child never took the lock"
        time.sleep(0.01)
    assert lock.acquire(timeout=0.05) is False  # held by a live process
    children.kill(p)
    with pytest.raises(shmkit.OwnerDied) as died:
        lock.acquire(timeout=10)
    assert died.value.lock is lock and lock.held  # we hold it, inconsistent
    assert flag[0] == 1  # the dead owner's half-done update is visible: repair it
    flag[0] = 0
    died.value.mark_consistent()
    lock.release()
    with lock:  # consistent again: a normal acquire
        pass


def test_release_without_repair_is_not_recoverable(ctx, children, segment):
    lock = shmkit.Lock(segment, "unrepaired")
    ready = ctx.Event()
    p = children.start(ctx, helpers.hold_pickled_lock_forever, lock, ready)
    assert ready.wait(60)
    children.kill(p)
    with pytest.raises(shmkit.OwnerDied):
        with lock:
            pass  # not reached: __enter__ raises, holding the lock
    lock.release()  # gives up without mark_consistent()
    with pytest.raises(shmkit.NotRecoverable):
        lock.acquire(timeout=1)


def test_condition_between_processes(ctx, children, segment):
    lock = shmkit.Lock(segment, "cv.lock")
    cond = shmkit.Condition(segment, "cv", lock)
    arr = shmkit.SharedArray(segment, "cv.flags", 16)
    flags = numpy.frombuffer(arr, dtype=numpy.int64)
    p = children.start(ctx, helpers.wait_notified, cond, arr)
    deadline = time.monotonic() + 60
    while True:
        with lock:
            if flags[1] == 1:
                flags[0] = 1
                cond.notify_all()
                break
        assert time.monotonic() < deadline
        time.sleep(0.01)
    children.join_ok(p)
    with cond:
        assert cond.wait(timeout=0.05) is False  # nobody notifies: times out, lock held again
        assert lock.held
    with pytest.raises(ValueError, match="does not hold"):
        cond.wait(0.01)
