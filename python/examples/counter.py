"""The shmutils README's counter, redone with shmkit: N processes increment one shared counter
under a shmkit.Lock, and one of them is SIGKILLed while it holds the lock, in the middle of an
update. The next process to take the lock gets shmkit.OwnerDied (holding the lock), rolls the
torn update back from its journal, calls mark_consistent() and carries on; the final count is
exact. With multiprocessing.Lock the other processes would wait for the dead one forever.

    PYTHONPATH=build/release/python /usr/bin/python3 python/examples/counter.py [-n 4] [-m 2000]

Exit status 0 when the count is exactly the increments that completed, 1 otherwise.
"""

import argparse
import multiprocessing
import os
import signal
import sys
import time

import numpy

import shmkit

COUNT, PENDING, BEFORE, REPAIRS = range(4)  # the shared state: four int64


def take(lock, state):
    """Acquires the lock; repairs the counter when its previous holder died holding it."""
    try:
        lock.acquire()
    except shmkit.OwnerDied as died:
        # The previous holder died inside the update of increment(): undo the half-done one.
        if state[PENDING]:
            state[COUNT] = state[BEFORE]
            state[PENDING] = 0
        state[REPAIRS] += 1
        died.mark_consistent()  # still held: continue as after a normal acquire


def increment(lock, state, die_midway=False):
    take(lock, state)
    try:
        state[BEFORE] = state[COUNT]  # journal first,
        state[PENDING] = 1            # then mark the update in progress,
        state[COUNT] += 1             # then change the data
        if die_midway:
            os.kill(os.getpid(), signal.SIGSTOP)  # stopped holding the lock; the parent kills us
        state[PENDING] = 0
    finally:
        lock.release()


def worker(seg, increments, victim):
    lock = shmkit.Lock(seg, "counter.lock", create=False)
    state = numpy.frombuffer(shmkit.SharedArray(seg, "counter.state"), dtype=numpy.int64)
    for _ in range(increments):
        increment(lock, state)
    if victim:
        increment(lock, state, die_midway=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", "--processes", type=int, default=4)
    ap.add_argument("-m", "--increments", type=int, default=2000)
    ap.add_argument("--start-method", default=None, choices=["fork", "spawn", "forkserver"])
    args = ap.parse_args()
    ctx = multiprocessing.get_context(args.start_method)
    name = f"/shmkit_counter_{os.getpid()}"
    seg = shmkit.Segment.create(name, 1 << 20)
    procs = []
    shmkit.Lock(seg, "counter.lock")
    state = numpy.frombuffer(shmkit.SharedArray(seg, "counter.state", 4 * 8), dtype=numpy.int64)
    try:
        victim = ctx.Process(target=worker, args=(seg, args.increments, True))
        victim.start()
        procs.append(victim)
        for _ in range(args.processes - 1):
            p = ctx.Process(target=worker, args=(seg, args.increments, False))
            p.start()
            procs.append(p)
        # Wait until the victim stops itself holding the lock mid-update, then kill it.
        deadline = time.monotonic() + 60
        while not open(f"/proc/{victim.pid}/stat").read().split(") ")[1].startswith("T"):
            if time.monotonic() > deadline:
                raise SystemExit("counter: the victim never stopped")
            time.sleep(0.001)
        os.kill(victim.pid, signal.SIGKILL)
        for p in procs:
            p.join(60)
        lock = shmkit.Lock(seg, "counter.lock")
        take(lock, state)  # repairs here if no other process came for the lock after the death
        lock.release()
        codes = [p.exitcode for p in procs]
        expected = args.processes * args.increments
        print(f"counter: {args.processes} processes x {args.increments} increments, one SIGKILLed holding "
              f"the lock mid-update; count {state[COUNT]}, expected {expected}; repairs {state[REPAIRS]}; "
              f"exit codes {codes}")
        ok = state[COUNT] == expected and state[REPAIRS] == 1 and codes[0] == -signal.SIGKILL and \
            all(c == 0 for c in codes[1:])
        return 0 if ok else 1
    finally:
        for p in procs:
            if p.exitcode is None:
                p.kill()
                p.join()
        shmkit.Segment.remove(name)
        seg.close()


if __name__ == "__main__":
    sys.exit(main())
