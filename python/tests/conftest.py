"""Fixtures shared by the shmkit Python tests: segments with unique names that are unlinked at
the end, the three multiprocessing start methods, and child processes that are always reaped."""

import multiprocessing
import os
import signal
import uuid

import pytest

import shmkit

START_METHODS = ["fork", "spawn", "forkserver"]


def unique_name(tag="t"):
    return f"/shmkit_pytest_{os.getpid()}_{tag}_{uuid.uuid4().hex[:10]}"


@pytest.fixture
def segment():
    name = unique_name()
    seg = shmkit.Segment.create(name, 4 << 20)
    try:
        yield seg
    finally:
        try:
            shmkit.Segment.remove(name)
        except shmkit.NotFound:
            pass
        seg.close()


@pytest.fixture(params=START_METHODS)
def ctx(request):
    return multiprocessing.get_context(request.param)


class Children:
    """Starts processes and makes sure every one is gone when the test ends."""

    def __init__(self):
        self.procs = []

    def start(self, ctx, target, *args):
        p = ctx.Process(target=target, args=args, daemon=True)
        p.start()
        self.procs.append(p)
        return p

    def join_ok(self, p, timeout=60):
        p.join(timeout)
        assert p.exitcode == 0, f"child {p.pid} exit code {p.exitcode} (None: still running after {timeout} s)"

    def kill(self, p):
        os.kill(p.pid, signal.SIGKILL)
        p.join(30)
        assert p.exitcode == -signal.SIGKILL

    def cleanup(self):
        for p in self.procs:
            if p.exitcode is None:
                p.kill()
            p.join(10)


@pytest.fixture
def children():
    c = Children()
    try:
        yield c
    finally:
        c.cleanup()
