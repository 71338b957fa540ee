"""shmkit.Queue: bytes messages and pickled objects between a producer and a consumer process of
every start method; timeouts (queue.Empty / queue.Full), close(), messages too large."""

import queue

import pytest

import helpers
import shmkit


def test_producer_and_consumer_processes(ctx, children, segment):
    q = shmkit.Queue(segment, "pc", capacity=1 << 14, max_message=256)  # small: the producer must wait
    consumer = children.start(ctx, helpers.consume_and_check, q, 3000)
    producer = children.start(ctx, helpers.produce, q, 3000)
    children.join_ok(producer)
    children.join_ok(consumer)
    assert q.empty()


def test_timeouts_close_and_sizes(segment):
    q = shmkit.Queue(segment, "t", capacity=4096, max_message=64)
    with pytest.raises(queue.Empty):
        q.pop(0.05)
    assert q.try_pop() is None
    with pytest.raises(ValueError, match="max_message"):
        q.push(b"x" * 65)
    n = 0
    while q.try_push(b"y" * 64):
        n += 1
    assert n > 0
    with pytest.raises(queue.Full):
        q.push(b"z", timeout=0.05)
    pos = [None]
    assert q.pop() == b"y" * 64
    pos[0] = q.push(bytearray(b"abc"))  # any bytes-like object
    assert pos[0] > 0
    q.close()
    assert q.closed
    with pytest.raises(shmkit.Closed):
        q.push(b"late")
    for _ in range(n - 1):
        q.pop()
    assert q.pop() == b"abc"  # close drains first
    with pytest.raises(shmkit.Closed):
        q.pop(1)


def test_pickle_layer_and_lookup(segment):
    q = shmkit.Queue(segment, "objs")
    q.put({"k": [1, 2.5, "s"]})
    same = shmkit.Queue(segment, "objs", create=False)
    assert same.get(1) == {"k": [1, 2.5, "s"]}
    with pytest.raises(shmkit.NotFound):
        shmkit.Queue(segment, "nope", create=False)
