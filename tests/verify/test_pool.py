"""The worker pool frees its worker on every failure mode, and no worker outlives its parent.

Every test runs real worker processes; interrupts are real SIGINTs delivered to the calling
thread, kills are real SIGKILL/SIGTERM.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from mathse_rl.verify.pool import WorkerPool

# A big-integer power is one long C call that never lets go of the GIL (minutes for this size).
GIL_HOG = (7, 10 ** 9)


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] == "Z"
    except OSError:
        return True


def _wait_gone(pid: int, limit: float) -> float | None:
    """Seconds until ``pid`` is gone, or None if it is still there after ``limit`` s."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit:
        if _gone(pid):
            return time.monotonic() - t0
        time.sleep(0.02)
    return None


def _interrupt_main_after(delay: float) -> threading.Timer:
    main = threading.main_thread().ident
    t = threading.Timer(delay, signal.pthread_kill, args=(main, signal.SIGINT))
    t.start()
    return t


def test_ctrl_c_during_a_call_frees_the_worker(pool):
    assert threading.current_thread() is threading.main_thread()
    busy = pool.pids[0]
    _interrupt_main_after(0.3)
    with pytest.raises(KeyboardInterrupt):
        pool.call("sleep", 30.0, timeout=60.0)
    assert _wait_gone(busy, 2.0) is not None  # the interrupted task's worker does not go on computing
    t0 = time.monotonic()
    assert pool.call("echo", 5, timeout=10.0) == ("ok", 5)  # and the pool is not stuck on a busy worker
    assert time.monotonic() - t0 < 10.0


def test_ctrl_c_during_verify_leaves_no_busy_worker():
    from mathse_rl.verify import verify
    from mathse_rl.verify import pool as verify_pool

    shared = verify_pool.get_pool(min_size=2)
    shared.start(n=2, wait=60.0)
    hang = ("\\boxed{\\sum_{k=1}^{10^{12}} k^{k}}", "1")  # math-verify would run for ages
    _interrupt_main_after(1.0)
    with pytest.raises(KeyboardInterrupt):
        verify(*hang, timeout=60.0)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(w.busy for w in shared._workers):
        time.sleep(0.05)
    assert not any(w.busy for w in shared._workers)  # nobody is left computing for a caller that left
    assert shared.stats()["interrupted"] >= 1
    assert verify("\\boxed{\\int_0^1 x\\,dx}", "1/2", timeout=30.0).correct


def test_unpicklable_input_is_a_value_error_before_anything_is_sent(pool):
    sent_before = pool.stats()["calls"]
    with pytest.raises(ValueError, match="cannot be sent"):
        pool.call("echo", threading.Lock(), timeout=10.0)
    assert pool.stats()["calls"] == sent_before
    assert pool.call("echo", 6, timeout=10.0) == ("ok", 6)


def test_unpicklable_choices_leave_the_next_batch_unaffected():
    from mathse_rl.verify import verify_batch
    from mathse_rl.verify import pool as verify_pool

    verify_pool.get_pool(min_size=2).start(n=2, wait=60.0)
    with pytest.raises(ValueError, match="cannot be sent"):
        verify_batch(["\\boxed{2}"] * 4, ["2"] * 4, choices=[[threading.Lock(), "b"]] * 4, workers=2, timeout=5.0)
    # The next batch's symbolic answers are judged, not timed out on workers left busy.
    out = verify_batch(["\\boxed{\\frac{2}{4}}", "\\boxed{\\sqrt{4}}", "\\boxed{0.5}", "\\boxed{2^{1}}"],
                       ["1/2", "2", "1/2", "2"], workers=2, timeout=15.0)
    assert [v.reason for v in out].count("timeout") == 0, out
    assert all(v.correct for v in out), out


def test_a_worker_killed_mid_task_is_an_error_and_replaced(pool):
    victim = pool.pids[0]
    threading.Timer(0.3, os.kill, args=(victim, signal.SIGKILL)).start()
    status, _ = pool.call("sleep", 30.0, timeout=20.0, retries=0)  # with no retry (the default retries once)
    assert status == "error"
    assert pool.call("echo", 7, timeout=30.0) == ("ok", 7)
    assert victim not in pool.pids


def test_a_crashed_worker_is_an_error_and_replaced(pool):
    status, message = pool.call("crash", 3, timeout=20.0)
    assert status == "error" and "died" in message
    assert pool.call("echo", 8, timeout=30.0) == ("ok", 8)


def test_timeout_counts_from_the_start_of_the_item_and_queue_wait_is_reported(pool):
    # One worker, busy for 1 s; a second caller with a 0.5 s budget waits for it and then runs.
    first = threading.Thread(target=pool.call, args=("sleep", 1.0, 10.0))
    first.start()
    time.sleep(0.2)
    out = pool.call("echo", 9, timeout=0.5)
    first.join()
    assert out == ("ok", 9)
    assert out.queue_wait >= 0.5 and out.run_time < 0.5
    stats = pool.stats()
    assert stats["queue_wait_max"] >= 0.5 and stats["timeouts"] == 0


def test_an_overrunning_item_still_times_out_from_its_start(pool):
    t0 = time.monotonic()
    out = pool.call("sleep", 30.0, timeout=0.5)
    assert out == ("timeout", None) and out.started
    assert time.monotonic() - t0 < 5.0
    assert pool.stats()["timeouts"] == 1


def test_queue_limit_is_separate_and_reported(pool):
    first = threading.Thread(target=pool.call, args=("sleep", 1.5, 10.0))
    first.start()
    time.sleep(0.2)
    out = pool.call("echo", 1, timeout=5.0, queue_timeout=0.3)
    first.join()
    assert out == ("timeout", None) and not out.started
    assert pool.stats()["queue_timeouts"] == 1


def test_a_worker_started_from_a_short_lived_thread_outlives_that_thread(pool):
    # Linux's parent-death signal follows the thread that started a child; the pool must not
    # lose its workers when a caller's thread (a ThreadPoolExecutor's) ends.
    p = WorkerPool(size=1, preload=False)
    try:
        t = threading.Thread(target=p.call, args=("echo", 1, 30.0))
        t.start()
        t.join()
        (pid,) = p.pids
        time.sleep(0.5)
        assert not _gone(pid)
        assert p.call("echo", 2, timeout=30.0) == ("ok", 2) and p.pids == [pid]
    finally:
        p.close()


@pytest.mark.parametrize("death_watch", ["auto", "lifeline"])
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_a_worker_cannot_outlive_its_parent_even_holding_the_gil(death_watch, sig):
    code = (
        "import sys, threading, time; from mathse_rl.verify.pool import WorkerPool;"
        f"p = WorkerPool(size=1, preload=False, death_watch={death_watch!r}); p.start(wait=60.0);"
        f"threading.Thread(target=p.call, args=('power', {GIL_HOG!r}, 900.0), daemon=True).start();"
        "time.sleep(1.0); print(*p.watches, flush=True); print(*p.started, *p.helpers, flush=True); time.sleep(600)"
    )
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    try:
        watches = parent.stdout.readline().split()
        assert watches == (["pdeathsig"] if death_watch == "auto" and sys.platform.startswith("linux")
                           else ["lifeline"])
        pids = [int(x) for x in parent.stdout.readline().split()]
        assert pids and not any(_gone(p) for p in pids)
        parent.send_signal(sig)
        parent.wait(10)
        after = [_wait_gone(p, 10.0) for p in pids]
        assert all(a is not None for a in after), f"worker outlived its parent: {pids} {after}"
        assert max(after) < 1.5, after  # about a second at most, whatever the worker computes
    finally:
        parent.kill()
        for p in pids if "pids" in dir() else []:
            try:
                os.kill(p, signal.SIGKILL)
            except OSError:
                pass


def test_close_leaves_no_process_behind():
    p = WorkerPool(size=2, preload=False, death_watch="lifeline")
    p.start(wait=30.0)
    started = list(p.started) + list(p.helpers)
    assert len(p.helpers) == 2 and p.watches == ["lifeline", "lifeline"]
    p.close()
    assert all(_wait_gone(pid, 5.0) is not None for pid in started)


def test_queue_wait_is_reported_through_the_public_api():
    from mathse_rl.verify import verify
    from mathse_rl.verify.api import pool_stats

    before = pool_stats()
    assert verify("\\boxed{\\int_0^1 x\\,dx}", "1/2", timeout=30.0).correct
    after = pool_stats()
    assert after["calls"] == before["calls"] + 1 and after["queue_wait_total"] >= before["queue_wait_total"]
