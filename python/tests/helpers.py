"""Functions the tests run in child processes (module level, so that the spawn and forkserver
start methods can find them by name)."""

import os
import time

import numpy

import shmkit


def hold_lock_forever(seg, lock_name, flag_name):
    """Acquires the lock, marks the shared flag half-updated, says so, then waits to be killed."""
    lock = shmkit.Lock(seg, lock_name, create=False)
    flag = numpy.frombuffer(shmkit.SharedArray(seg, flag_name), dtype=numpy.int64)
    lock.acquire()
    flag[0] = 1  # "inconsistent": the repairer must see it
    flag[1] = os.getpid()
    while True:
        time.sleep(1)


def hold_pickled_lock_forever(lock, ready):
    lock.acquire()
    ready.set()
    while True:
        time.sleep(1)


def add_under_lock(lock, array, times):
    counts = numpy.frombuffer(array, dtype=numpy.int64)
    for _ in range(times):
        with lock:
            counts[0] += 1


def write_array(array, value):
    a = numpy.frombuffer(array, dtype=numpy.float64)
    a[:] = value


def read_array_and_check(array, value):
    a = numpy.frombuffer(array, dtype=numpy.float64)
    if not (a == value).all():
        raise SystemExit(3)


def own_array_then_wait(seg, name, nbytes, ready):
    arr = shmkit.SharedArray(seg, name, nbytes, owned=True)
    memoryview(arr)[0] = 7
    ready.set()
    while True:
        time.sleep(1)


def produce(q, n):
    for i in range(n):
        q.push(i.to_bytes(4, "little") * 16)
    q.put({"done": n})


def consume_and_check(q, n):
    for i in range(n):
        if q.pop(30) != i.to_bytes(4, "little") * 16:
            raise SystemExit(4)
    if q.get(30) != {"done": n}:
        raise SystemExit(5)


def wait_notified(cond, array):
    flags = numpy.frombuffer(array, dtype=numpy.int64)
    with cond:
        flags[1] = 1  # waiting
        if not cond.wait_for(lambda: flags[0] == 1, 30):
            raise SystemExit(6)


def segment_name_and_value(seg, out_q):
    out_q.put((seg.name, bytes(memoryview(shmkit.SharedArray(seg, "data"))[:4])))


def square(x):
    return x * x


def fail(msg):
    raise ValueError(msg)


def pid_then_sleep(seconds):
    time.sleep(seconds)
    return os.getpid()


def sleep_once_then(marker_array, seconds, value):
    """First call (marker 0) sleeps so the test can kill the worker; the retry returns at once."""
    m = numpy.frombuffer(marker_array, dtype=numpy.int64)
    m[0] += 1
    m[1] = os.getpid()
    if m[0] == 1:
        time.sleep(seconds)
    return value


def pool_parent(out_q):
    """Makes a pool, reports its workers, then waits to be killed."""
    pool = shmkit.WorkerPool(2)
    assert pool.submit(square, 2).result(30) == 4
    out_q.put(pool.worker_pids())
    while True:
        time.sleep(1)
