"""shmkit against Python's multiprocessing, same workloads on both sides in one run
(time.perf_counter; prints the ratio of each pair and its goal from issue 18):

  queue_64B    one producer process pushes N 64-byte messages, one consumer process pops them:
               shmkit.Queue (push/pop of bytes) vs multiprocessing.Queue (put/get of bytes).
               Ratio = multiprocessing time / shmkit time. Goal >= 10x.
  lock         acquire + release, uncontended, in one process: shmkit.Lock vs multiprocessing.Lock
               (best of 40 interleaved rounds, scaled to the whole count). Goal >= 1x.
  pool_tiny    10,000 tiny tasks (submit all, then collect every result), 2 workers:
               shmkit.WorkerPool vs concurrent.futures.ProcessPoolExecutor. Goal >= 5x.

Run: PYTHONPATH=build/release/python /usr/bin/python3 python/bench.py [--quick]
"""

import concurrent.futures
import multiprocessing
import os
import sys
import time

# Run as `python3 python/bench.py`, this file's directory (the package's sources, without the
# built extension) would shadow the built or installed shmkit.
_here = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _here]
import shmkit  # noqa: E402

MSG = b"x" * 64


def _tiny(x):
    return x + 1


def _shmkit_consumer(seg, n, ready):
    q = shmkit.Queue(seg, "bench.q", create=False)
    ready.set()
    for _ in range(n):
        q.pop()


def _mp_consumer(q, n, ready):
    ready.set()
    for _ in range(n):
        q.get()


def _timed_one_way(consumer, args, put):
    """Seconds for N puts in this process until the consumer process has taken all N."""
    n = args[-1]
    ready = multiprocessing.Event()
    p = multiprocessing.Process(target=consumer, args=(*args, ready))
    p.start()
    ready.wait(30)
    t0 = time.perf_counter()
    for _ in range(n):
        put(MSG)
    p.join(120)
    elapsed = time.perf_counter() - t0
    if p.exitcode != 0:
        raise RuntimeError(f"consumer failed: exit code {p.exitcode}")
    return elapsed


def bench_queue(n):
    seg = shmkit.Segment.create_anonymous(8 << 20)
    q = shmkit.Queue(seg, "bench.q", 1 << 20, 256)
    t_shm = _timed_one_way(_shmkit_consumer, (seg, n), q.push)
    seg.close()
    mq = multiprocessing.Queue()
    t_mp = _timed_one_way(_mp_consumer, (mq, n), mq.put)
    return t_shm, t_mp


def bench_lock(n, rounds=40):
    """Best of `rounds` interleaved rounds of n/rounds pairs each: on a shared machine the best
    round is the one the scheduler left alone, for both sides alike."""
    seg = shmkit.Segment.create_anonymous(1 << 20)
    lk = shmkit.Lock(seg, "bench.lock")
    ml = multiprocessing.Lock()
    per_round = max(1, n // rounds)
    best_shm = best_mp = float("inf")
    for _ in range(rounds):
        for lock, is_shm in ((lk, True), (ml, False)):
            acq, rel = lock.acquire, lock.release
            t0 = time.perf_counter()
            for _ in range(per_round):
                acq()
                rel()
            t = time.perf_counter() - t0
            if is_shm:
                best_shm = min(best_shm, t)
            else:
                best_mp = min(best_mp, t)
    del lk
    seg.close()
    return best_shm * rounds, best_mp * rounds


def bench_pool(n, workers=2):
    with shmkit.WorkerPool(workers) as pool:
        pool.map(_tiny, range(100))  # workers started and warm
        t0 = time.perf_counter()
        tasks = [pool.submit(_tiny, i) for i in range(n)]
        total = sum(t.result() for t in tasks)
        t_shm = time.perf_counter() - t0
    assert total == n * (n + 1) // 2, total
    with concurrent.futures.ProcessPoolExecutor(workers) as ex:
        list(ex.map(_tiny, range(100)))
        t0 = time.perf_counter()
        futs = [ex.submit(_tiny, i) for i in range(n)]
        total = sum(f.result() for f in futs)
        t_mp = time.perf_counter() - t0
    assert total == n * (n + 1) // 2, total
    return t_shm, t_mp


def main():
    quick = "--quick" in sys.argv
    print(f"shmkit bench.py: python {sys.version.split()[0]}, {os.cpu_count()} CPUs, "
          f"load {os.getloadavg()[0]:.2f}, start method {multiprocessing.get_start_method()}")
    ok = True
    rows = []
    n = 20_000 if quick else 200_000
    s, m = bench_queue(n)
    rows.append(("queue_64B", f"{n} msgs", s, m, 10.0))
    n = 100_000 if quick else 1_000_000
    s, m = bench_lock(n)
    rows.append(("lock", f"{n} pairs", s, m, 1.0))
    n = 10_000
    s, m = bench_pool(n)
    rows.append(("pool_tiny", f"{n} tasks", s, m, 5.0))
    for name, what, s, m, goal in rows:
        ratio = m / s
        met = ratio >= goal
        ok &= met
        print(f"{name:10s} {what:>14s}  shmkit {s * 1e3:9.1f} ms  multiprocessing {m * 1e3:9.1f} ms  "
              f"ratio {ratio:6.2f}x  goal >= {goal:g}x  {'met' if met else 'NOT met'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
