"""``timeout`` bounds the whole call: waiting for a free worker included, from many threads, in
``verify``, ``averify`` and ``verify_batch``; a saturated pool answers undecidable at once; a worker
killed mid-item has that item retried once.

The contract (docs/verifier_eval.md, "Bounded time"): every call returns within ``timeout`` plus
``SLACK``. Hanging inputs are real: math-verify would sum 10^12 terms.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from mathse_rl.verify import averify, verify, verify_batch
from mathse_rl.verify import pool as verify_pool
from mathse_rl.verify.api import SLACK  # the stated bound: timeout + SLACK, on a loaded 2-core machine
from mathse_rl.verify.pool import WorkerPool

HANG = ("\\boxed{\\sum_{k=1}^{10^{12}} k^{k}}", "1")
TIMEOUT = 1.0


def _timed(fn, *args, **kwargs):
    t0 = time.monotonic()
    out = fn(*args, **kwargs)
    return out, time.monotonic() - t0


def test_hanging_calls_in_a_row_each_return_within_timeout(warm_pool):
    warm_pool.start(wait=60.0)
    took = []
    for _ in range(4):  # the successors of killed workers are still starting: callers must not wait for them
        v, dt = _timed(verify, *HANG, timeout=0.5)
        assert not v.correct and v.reason == "timeout", v
        took.append(dt)
    assert max(took) <= 0.5 + SLACK, took


def test_hanging_calls_from_many_threads_return_within_timeout(warm_pool):
    with ThreadPoolExecutor(max_workers=8) as ex:
        results = list(ex.map(lambda _: _timed(verify, *HANG, timeout=TIMEOUT), range(8)))
    assert all(v.reason == "timeout" and not v.correct for v, _ in results), results
    took = sorted(dt for _, dt in results)
    assert took[-1] <= TIMEOUT + SLACK, took


def test_many_concurrent_averify_calls_return_within_timeout(warm_pool):

    async def one():
        t0 = time.monotonic()
        v = await averify(*HANG, timeout=TIMEOUT)
        return v, time.monotonic() - t0

    async def main():
        return await asyncio.gather(*(one() for _ in range(12)))  # more than the loop's default thread pool

    results = asyncio.run(main())
    assert all(v.reason == "timeout" for v, _ in results), results
    assert max(dt for _, dt in results) <= TIMEOUT + SLACK, sorted(dt for _, dt in results)


@pytest.mark.parametrize("workers", [1, 2])
def test_verify_batch_with_many_hanging_items_returns_within_timeout(workers, warm_pool):
    responses = [HANG[0]] * 5 + ["\\boxed{7}", "The answer is 3."]
    golds = [HANG[1]] * 5 + ["7", "3"]
    out, dt = _timed(verify_batch, responses, golds, timeout=TIMEOUT, workers=workers)
    assert [v.reason for v in out] == ["timeout"] * 5 + ["exact", "exact"], out
    assert dt <= TIMEOUT + SLACK, dt


def test_a_saturated_pool_answers_at_once_and_the_queue_is_bounded():
    pool = WorkerPool(size=1, preload=False, max_waiting=2)
    pool.start(wait=30.0)
    try:
        threads = [threading.Thread(target=pool.call, args=("sleep", 0.3, 5.0)) for _ in range(3)]
        for t in threads:  # one runs, two wait: the queue is full
            t.start()
            time.sleep(0.05)
        out, dt = _timed(pool.call, "echo", 1, 5.0)
        assert out.status == "busy" and not out.started and dt < 0.1, (out, dt)
        for t in threads:
            t.join()
        assert pool.stats()["rejected"] == 1
        assert pool.call("echo", 2, timeout=5.0) == ("ok", 2)  # once drained, the pool takes work again
    finally:
        pool.close()


def test_verify_on_a_saturated_pool_is_undecidable_at_once(monkeypatch):
    small = WorkerPool(size=1, preload=False, max_waiting=0)
    small.start(wait=30.0)
    monkeypatch.setattr(verify_pool, "_DEFAULT", small)
    try:
        busy = threading.Thread(target=verify, args=HANG, kwargs={"timeout": 1.0})
        busy.start()
        time.sleep(0.3)
        v, dt = _timed(verify, "\\boxed{\\int_0^1 x\\,dx}", "1/2", timeout=TIMEOUT)
        assert (v.correct, v.reason) == (False, "timeout") and dt < 0.2, (v, dt)
        busy.join()
    finally:
        small.close()


def test_a_worker_killed_mid_item_has_the_item_retried_once(pool):
    victim = pool.pids[0]
    threading.Timer(0.2, os.kill, args=(victim, signal.SIGKILL)).start()
    out = pool.call("sleep", 0.5, timeout=10.0)
    assert out == ("ok", 0.5), out  # judged on a fresh worker, not reported as an error
    assert victim not in pool.pids
    stats = pool.stats()
    assert stats["died"] == 1 and stats["retried"] == 1
    status, message = pool.call("crash", 3, timeout=10.0)  # an item that kills every worker: one retry, then an error
    assert status == "error" and "died" in message
    assert pool.stats()["retried"] == 2 and pool.stats()["died"] == 3


def test_a_retry_never_runs_past_the_deadline(pool):
    threading.Timer(0.6, os.kill, args=(pool.pids[0], signal.SIGKILL)).start()
    out, dt = _timed(pool.call, "sleep", 30.0, 1.0, deadline=time.monotonic() + 1.0)
    assert out.status == "timeout" and dt <= 1.0 + SLACK, (out, dt)
