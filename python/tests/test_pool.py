"""shmkit.WorkerPool: Python callables in worker processes of every start method; a worker
SIGKILLed while running a task is replaced, the task is reported WorkerDied (or retried once
when asked), and the pool keeps working."""

import multiprocessing
import os
import signal
import time

import numpy
import pytest

import helpers
import shmkit


def test_results_and_exceptions(ctx):
    with shmkit.WorkerPool(2, mp_context=ctx) as pool:
        assert pool.map(helpers.square, range(50)) == [x * x for x in range(50)]
        t = pool.submit(helpers.fail, "boom")
        with pytest.raises(ValueError, match="boom"):
            t.result(30)
        assert t.status == "failed"
        with pytest.raises(TypeError):
            pool.submit(42)
        with pytest.raises(Exception):
            pool.submit(lambda: 1)  # not picklable: refused at submit, nothing queued
        assert pool.submit(helpers.square, 9).result(30) == 81


def test_worker_killed_task_reported_and_pool_survives(ctx):
    with shmkit.WorkerPool(2, mp_context=ctx) as pool:
        marker = shmkit.SharedArray(pool._seg, "test.marker", 16)
        m = numpy.frombuffer(marker, dtype=numpy.int64)
        t = pool.submit(helpers.sleep_once_then, marker, 60, "late")
        deadline = time.monotonic() + 30
        while m[1] == 0:
            assert time.monotonic() < deadline, "no worker started the task"
            time.sleep(0.01)
        victim = int(m[1])
        os.kill(victim, signal.SIGKILL)
        with pytest.raises(shmkit.WorkerDied):
            t.result(30)
        assert t.status == "worker_died"
        assert victim not in pool.worker_pids() and len(pool.worker_pids()) == 2
        assert pool.map(helpers.square, range(20)) == [x * x for x in range(20)]  # not broken
        assert pool.stats["worker_deaths"] == 1 and pool.stats["died"] == 1


def test_worker_killed_task_retried_once(ctx):
    with shmkit.WorkerPool(2, mp_context=ctx, retry=True) as pool:
        marker = shmkit.SharedArray(pool._seg, "test.marker", 16)
        m = numpy.frombuffer(marker, dtype=numpy.int64)
        t = pool.submit(helpers.sleep_once_then, marker, 60, "second try")
        others = [pool.submit(helpers.square, i) for i in range(100)]
        deadline = time.monotonic() + 30
        while m[1] == 0:
            assert time.monotonic() < deadline, "no worker started the task"
            time.sleep(0.01)
        os.kill(int(m[1]), signal.SIGKILL)
        assert t.result(30) == "second try"
        assert t.attempts == 2 and m[0] == 2
        assert [o.result(30) for o in others] == [i * i for i in range(100)]  # none lost, none twice
        assert pool.stats["retries"] == 1


def test_many_tasks_while_workers_are_killed():
    # Deaths at arbitrary points (also inside queue operations): every task ends exactly once.
    with shmkit.WorkerPool(2, retry=True) as pool:
        tasks = [pool.submit(helpers.square, i) for i in range(3000)]
        for _ in range(5):
            time.sleep(0.02)
            pids = pool.worker_pids()
            if pids:
                os.kill(pids[0], signal.SIGKILL)
            pool.wait(0.05)
        assert pool.wait(60)
        for i, t in enumerate(tasks):
            assert t.status in ("done", "worker_died")
            if t.status == "done":
                assert t.result() == i * i
        died = sum(t.status == "worker_died" for t in tasks)
        assert died == pool.stats["died"]
        assert pool.stats["completed"] + died == 3000
        assert pool.map(helpers.square, range(10)) == [x * x for x in range(10)]


def test_shutdown_reaps_workers():
    pool = shmkit.WorkerPool(2)
    pids = pool.worker_pids()
    assert pool.submit(helpers.square, 3).result(30) == 9
    pool.shutdown()
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    with pytest.raises(shmkit.Closed):
        pool.submit(helpers.square, 1)


def _running(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] != "Z"  # a zombie has exited
    except FileNotFoundError:
        return False


def test_workers_exit_when_the_pool_process_is_killed():
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    parent = ctx.Process(target=helpers.pool_parent, args=(out,))  # not daemonic: it has children
    parent.start()
    pids = []
    try:
        pids = out.get(timeout=60)
        assert all(_running(p) for p in pids)
        os.kill(parent.pid, signal.SIGKILL)
        parent.join(30)
        deadline = time.monotonic() + 30
        while any(_running(p) for p in pids):
            assert time.monotonic() < deadline, "pool workers outlived their pool's process"
            time.sleep(0.05)
    finally:
        if parent.exitcode is None:
            parent.kill()
            parent.join(10)
        for p in pids:  # on failure, leave no orphan behind
            if _running(p):
                os.kill(p, signal.SIGKILL)
