"""shmkit.WorkerPool: Python callables run in worker processes; a worker that dies (SIGKILL, the
OOM killer, os._exit) is replaced, its task is reported (WorkerDied) or retried once, and the pool
keeps working — unlike concurrent.futures.ProcessPoolExecutor, which becomes BrokenProcessPool.

Why not the C++ shmkit::WorkerPool: it forks its workers itself (raw fork(), at construction and
again whenever it replaces one), which bypasses Python's own fork handling (os.fork's
re-initialisation of the interpreter's locks and threads in the child) and works with the fork
start method only. This pool starts its workers with multiprocessing (fork, spawn or forkserver)
and moves tasks and results through two shmkit Queues in an anonymous segment:

  parent --tasks queue--> workers --results queue--> parent

Each task message is (task id, pickled (fn, args, kwargs)); each result (task id, ok, value).
A worker pops with a PopReceipt of its own (a slot in the segment): the queue writes the popped
message's position into it inside its critical section, so after a worker's death its receipt
names the last task it took, exactly (a pop cut short by the death is completed or undone by the
next consumer: INVARIANT6 of <shmkit/channels/queue.hpp>). The parent settles a dead worker once:
  1. the worker has been reaped (the kernel has then released its robust locks), and no death is
     left unrepaired on the tasks queue's consumer lock (the next consumer repairs it and settles
     the receipt; the replacement worker is started at once, so one always comes);
  2. every result already committed is drained from the results queue;
  3. the task named by the dead worker's receipt, if it has no result, is retried once (when
     asked) or reported WorkerDied.
INVARIANT pool-1: every submitted task ends exactly once as a result, a WorkerDied, or a retry
  (which resubmits the same task under the same id), because a task's id is in `_by_pos` from its
  push until its result or its settlement, and the receipt of the worker that took it is
  settled only after its death is repaired.
Receipt slots are not reused until their worker is settled, so a replacement never overwrites the
receipt of the worker it replaces.

Results are collected by the thread that waits (Task.result, map, wait): no feeder or manager
thread. One thread uses a pool at a time.
"""

import multiprocessing
import pickle
import queue as _queue
import time

from . import _shmkit
from .errors import Closed, WorkerDied

_DUMPS = pickle.dumps
_LOADS = pickle.loads
_PROTO = pickle.HIGHEST_PROTOCOL
_SUPERVISE_EVERY = 0.02  # seconds between worker liveness checks while waiting
_IDLE_CHECK = 0.1        # seconds between a worker's checks that its parent is alive when idle


def _worker_main(seg, slot, parent_pid):
    tasks = _shmkit.Queue(seg, "pool.tasks", create=False)
    results = _shmkit.Queue(seg, "pool.results", create=False)
    receipt = _shmkit.PopReceipt(_shmkit.SharedArray(seg, "pool.receipts"), slot)
    parent = multiprocessing.parent_process()
    max_message = results.max_message
    pop = tasks.pop
    push = results.push
    while True:
        try:
            msg = pop(_IDLE_CHECK, receipt)
        except _queue.Empty:
            if parent is not None and not parent.is_alive():
                return
            continue
        except Closed:
            return
        tid = msg[:8]
        try:
            fn, args, kwargs = _LOADS(msg[8:])
            out = (True, fn(*args, **kwargs))
        except BaseException as e:  # the task failed, not the worker
            out = (False, e)
        try:
            data = tid + _DUMPS(out, _PROTO)
        except Exception as e:
            data = tid + _DUMPS((False, TypeError(f"shmkit.WorkerPool: the task's result cannot be pickled: {e!r}")), _PROTO)
        if len(data) > max_message:
            data = tid + _DUMPS((False, ValueError(
                f"shmkit.WorkerPool: the task's result is {len(data)} bytes, more than max_message {max_message}")), _PROTO)
        push(data)


class Task:
    """The handle of a submitted task: result(), done(), status, attempts."""

    __slots__ = ("_pool", "id", "status", "attempts", "_value", "_payload", "_call", "_retry", "_pos")

    def __init__(self, pool, tid, payload, call, retry):
        self._pool = pool
        self.id = tid
        self.status = "pending"  # -> "done" | "failed" | "worker_died"
        self.attempts = 1
        self._value = None
        self._payload = payload
        # A retry pickles the call again: some pickles load only once (a file descriptor passed
        # with multiprocessing's DupFd, e.g. an anonymous Segment among the arguments).
        self._call = call if retry else None
        self._retry = retry
        self._pos = 0

    def done(self):
        if self.status == "pending":
            self._pool._collect(None, 0)
        return self.status != "pending"

    def result(self, timeout=None):
        """The callable's return value; raises its exception, WorkerDied, or TimeoutError."""
        if self.status == "pending":
            self._pool._collect(self, timeout)
        if self.status == "done":
            return self._value
        if self.status == "pending":
            raise TimeoutError(f"shmkit.WorkerPool: task {self.id} still running after {timeout} s")
        raise self._value

    def __repr__(self):
        return f"<shmkit.Task {self.id} {self.status} attempts={self.attempts}>"


class WorkerPool:
    """WORKERS processes (started with mp_context, default multiprocessing's) that run submitted
    callables. retry=True retries a task once when its worker dies (default: WorkerDied).
    Messages (a pickled task or result) are at most max_message bytes."""

    def __init__(self, workers=2, *, mp_context=None, retry=False, max_message=1 << 20, queue_bytes=8 << 20):
        if not isinstance(workers, int) or isinstance(workers, bool):
            raise TypeError("shmkit.WorkerPool: workers must be an int")
        if not 1 <= workers <= 256:
            raise ValueError(f"shmkit.WorkerPool: workers must be 1..256, got {workers}")
        if not isinstance(max_message, int) or not isinstance(queue_bytes, int):
            raise TypeError("shmkit.WorkerPool: max_message and queue_bytes must be ints")
        if not 64 <= max_message <= queue_bytes // 2:
            raise ValueError("shmkit.WorkerPool: need 64 <= max_message <= queue_bytes / 2")
        self._ctx = mp_context if mp_context is not None else multiprocessing.get_context()
        self._retry = bool(retry)
        self._slots = 4 * workers + 16
        self._seg = _shmkit.Segment.create_anonymous(2 * queue_bytes + (4 << 20), capacity=4 * queue_bytes + (64 << 20))
        self._receipts = _shmkit.SharedArray(self._seg, "pool.receipts", 8 * self._slots)
        self._tasks = _shmkit.Queue(self._seg, "pool.tasks", queue_bytes, max_message)
        self._results = _shmkit.Queue(self._seg, "pool.results", queue_bytes, max_message)
        self._free_slots = list(range(self._slots))
        self._workers = [None] * workers  # (process, receipt slot, PopReceipt)
        self._pending = {}   # task id bytes -> Task
        self._by_pos = {}    # tasks-queue position -> Task (pushed, no outcome yet)
        self._dead = []      # (slot, PopReceipt) of reaped workers not yet settled
        self._next_id = 1
        self._last_check = 0.0
        self._closed = False
        self.stats = {"submitted": 0, "completed": 0, "failed": 0, "worker_deaths": 0, "retries": 0, "died": 0}
        try:
            for w in range(workers):
                self._start(w)
        except BaseException:
            self.shutdown(wait=False)
            raise

    # -- workers ----------------------------------------------------------------------------
    def _start(self, w):
        slot = self._free_slots.pop()
        receipt = _shmkit.PopReceipt(self._receipts, slot)
        receipt.pos = 0
        import os
        p = self._ctx.Process(target=_worker_main, args=(self._seg, slot, os.getpid()), daemon=True,
                              name=f"shmkit-pool-{w}")
        try:
            p.start()
        except BaseException:
            self._free_slots.append(slot)
            raise
        self._workers[w] = (p, slot, receipt)

    def worker_pids(self):
        return [w[0].pid for w in self._workers if w is not None]

    def _supervise(self):
        """Reaps dead workers, starts their replacements, settles their tasks when it can."""
        self._last_check = time.monotonic()
        for w, entry in enumerate(self._workers):
            if entry is None or entry[0].exitcode is None:
                continue
            p, slot, receipt = entry
            p.join(0)
            p.close()
            self._workers[w] = None
            self.stats["worker_deaths"] += 1
            self._dead.append((slot, receipt))
            if not self._closed:
                self._start(w)
        if self._dead:
            self._settle_dead()

    def _settle_dead(self, force=False):
        if not force and self._tasks._consumer_repair_pending():
            return  # the next consumer's repair settles the dead worker's receipt first
        self._drain()
        dead, self._dead = self._dead, []
        retries = []
        for slot, receipt in dead:
            task = self._by_pos.get(receipt.pos)
            if task is not None:
                del self._by_pos[task._pos]
                if task._retry and task.attempts == 1 and not self._closed:
                    task.attempts = 2
                    task._payload = task.id + _DUMPS(task._call, _PROTO)
                    self.stats["retries"] += 1
                    retries.append(task)
                else:
                    del self._pending[task.id]
                    task.status = "worker_died"
                    task._value = WorkerDied(f"shmkit.WorkerPool: the worker running task {int.from_bytes(task.id, 'little')} "
                                             f"died (attempt {task.attempts})")
                    task._payload = task._call = None
                    self.stats["died"] += 1
            self._free_slots.append(slot)
        for task in retries:
            self._push(task)

    # -- tasks --------------------------------------------------------------------------------
    def submit(self, fn, /, *args, **kwargs):
        """Runs fn(*args, **kwargs) in a worker; returns a Task."""
        return self.submit_task(fn, args, kwargs)

    def submit_task(self, fn, args=(), kwargs=None, *, retry=None):
        if self._closed:
            raise Closed("shmkit.WorkerPool: the pool is shut down")
        if not callable(fn):
            raise TypeError(f"shmkit.WorkerPool.submit: {fn!r} is not callable")
        tid = self._next_id.to_bytes(8, "little")
        call = (fn, tuple(args), kwargs or {})
        payload = tid + _DUMPS(call, _PROTO)
        if len(payload) > self._tasks.max_message:
            raise ValueError(f"shmkit.WorkerPool.submit: the pickled task is {len(payload)} bytes, "
                             f"more than max_message {self._tasks.max_message}")
        self._next_id += 1
        task = Task(self, tid, payload, call, self._retry if retry is None else bool(retry))
        self._pending[tid] = task
        self._push(task)
        self.stats["submitted"] += 1
        return task

    def _push(self, task):
        while True:
            try:
                task._pos = self._tasks.push(task._payload, 0)
                break
            except _queue.Full:
                # Full: the workers may be blocked on a full results queue; collect to make room.
                self._collect(None, _SUPERVISE_EVERY)
        self._by_pos[task._pos] = task

    def map(self, fn, iterable, timeout=None):
        tasks = [self.submit(fn, x) for x in iterable]
        return [t.result(timeout) for t in tasks]

    def _finish(self, data):
        task = self._pending.pop(data[:8], None)
        if task is None:
            return  # settled already (cannot happen by INVARIANT pool-1; tolerated)
        self._by_pos.pop(task._pos, None)
        task._payload = task._call = None
        ok, value = _LOADS(data[8:])
        task._value = value
        if ok:
            task.status = "done"
            self.stats["completed"] += 1
        else:
            task.status = "failed"
            self.stats["failed"] += 1

    def _drain(self):
        pop = self._results.try_pop
        data = pop()
        while data is not None:
            self._finish(data)
            data = pop()

    def _collect(self, task, timeout):
        """Collects results until `task` has an outcome (None: until none is ready) or timeout."""
        end = None if timeout is None else time.monotonic() + timeout
        pop = self._results.pop
        while True:
            self._drain()
            now = time.monotonic()
            if now - self._last_check >= _SUPERVISE_EVERY or self._dead:
                self._supervise()
            if task is None or task.status != "pending":
                if task is not None or end is None or now >= end:
                    return
            if end is not None and now >= end:
                return
            if not self._pending:
                return
            wait = _SUPERVISE_EVERY if end is None else min(_SUPERVISE_EVERY, max(0.0, end - now))
            try:
                self._finish(pop(wait))
            except _queue.Empty:
                pass

    def wait(self, timeout=None):
        """Collects until every submitted task has an outcome (or the timeout)."""
        end = None if timeout is None else time.monotonic() + timeout
        while self._pending:
            left = None if end is None else end - time.monotonic()
            if left is not None and left <= 0:
                return False
            self._collect(next(iter(self._pending.values())), left)
        return True

    # -- shutdown -----------------------------------------------------------------------------
    def shutdown(self, wait=True, timeout=5.0):
        """Stops the workers (after the queued tasks when wait=True) and reaps them; tasks left
        without a result are reported WorkerDied. Idempotent."""
        if self._closed:
            return
        if wait:
            self.wait(timeout)
        self._closed = True
        self._tasks.close()
        end = time.monotonic() + (timeout if wait else 0.0)
        for w, entry in enumerate(self._workers):
            if entry is None:
                continue
            p, slot, receipt = entry
            p.join(max(0.0, end - time.monotonic()))
            if p.exitcode is None:
                p.kill()
                p.join()
            p.close()
            self._workers[w] = None
            self._dead.append((slot, receipt))
        self._settle_dead(force=True)
        for task in list(self._pending.values()):
            task.status = "worker_died"
            task._value = WorkerDied("shmkit.WorkerPool: shut down before the task ran")
            task._payload = task._call = None
        self._pending.clear()
        self._by_pos.clear()
        self._receipts = None
        self._seg.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.shutdown(wait=exc[0] is None)

    def __del__(self):
        try:
            self.shutdown(wait=False)
        except Exception:
            pass
