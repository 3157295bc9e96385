"""Bounded time and no crashes: hard timeouts from any thread, asyncio loop or Ray actor,
pathological inputs, worker processes started lazily and never leaked."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from mathse_rl.verify import verify, verify_batch
from mathse_rl.verify.pool import WorkerPool

# math-verify would try to sum 10^12 terms: only the pool's kill ends it.
HANG = ("\\boxed{\\sum_{k=1}^{10^{12}} k^{k}}", "1")
SLACK = 0.5  # the contract: a call returns within timeout + 0.5 s

PATHOLOGICAL = {
    "power_tower": "\\boxed{9^{9^{9^{9^{9}}}}}",
    "unbalanced_parens": "\\boxed{" + "(" * 5000 + "}",
    "deep_fractions": "\\boxed{" + "\\frac{1}{" * 400 + "2" + "}" * 800 + "}",
    "unclosed_box": "The answer is \\boxed{" + "x+" * 2000,
    "huge_output": "1 " * 500_000 + "The answer is \\boxed{3}",
    "huge_box": "\\boxed{" + "1+" * 300_000 + "1}",
    "injection": "\\boxed{__import__('os').system('touch mathse_pwned')}",
    "injection_latex": "\\boxed{\\text{\\input{/etc/passwd}} __import__('os').system('touch mathse_pwned')}",
    "huge_factorial": "\\boxed{100000000!}",
    "big_expansion": "\\boxed{\\frac{(x+1)^{80}-(x-1)^{80}}{x}}",
    "nul_and_controls": "\\boxed{\x00\x01\x02}",
    "many_boxes": "\\boxed{1} " * 5000,
    "unclosed_boxes": "\\boxed{" * 3000,
    "nested_boxes": "\\boxed{" * 3000 + "}" * 3000,
    "open_math_spans": "The answer is " + "\\(" * 6000 + " x",
    "long_sum": "\\boxed{" + "+".join(["1"] * 400) + "}",
}


@pytest.mark.parametrize("name", sorted(PATHOLOGICAL))
def test_pathological_input_is_wrong_in_bounded_time(name, warm_pool, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    gold = "3" if name == "huge_output" else "160" if name == "big_expansion" else "0"
    start = time.monotonic()
    v = verify(PATHOLOGICAL[name], gold, timeout=1.0)
    elapsed = time.monotonic() - start
    if name == "huge_output":
        assert v.correct, v  # the answer sits at the end of a 1 MB output
    else:
        assert not v.correct and v.reason in {"mismatch", "timeout", "too_long", "parse_error", "no_answer"}, v
    assert elapsed < 1.0 + SLACK, (name, elapsed, v)
    assert not (tmp_path / "mathse_pwned").exists()
    assert not os.path.exists(os.path.join(os.getcwd(), "mathse_pwned"))


def test_hanging_symbolic_call_is_killed_and_the_pool_recovers(warm_pool):
    warm_pool.start(wait=60.0)  # successors of workers killed by earlier tests are warm
    killed = warm_pool.killed
    start = time.monotonic()
    v = verify(*HANG, timeout=1.0)
    assert v.reason == "timeout" and not v.correct
    assert time.monotonic() - start < 1.0 + SLACK
    assert warm_pool.killed == killed + 1
    # the next symbolic call gets a fresh worker
    assert verify("\\boxed{\\int_0^1 x\\,dx}", "\\frac12", timeout=20.0).correct


def test_a_pool_kills_an_overrunning_task_and_replaces_the_worker():
    pool = WorkerPool(size=1, preload=False)
    assert pool.pids == []  # nothing starts before the first task
    try:
        assert pool.call("echo", 41, timeout=30.0) == ("ok", 41)
        first = pool.pids[0]
        start = time.monotonic()
        assert pool.call("sleep", 30.0, timeout=0.5) == ("timeout", None)
        assert time.monotonic() - start < 0.5 + SLACK
        assert pool.killed == 1
        deadline = time.monotonic() + 2.0  # killed at once; reaped in the background, off the caller's time
        while not _gone(first) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert _gone(first)
        assert pool.call("echo", 42, timeout=30.0) == ("ok", 42)
        assert pool.pids and pool.pids[0] != first
    finally:
        pool.close()
    assert pool.pids == []


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


MIXED = [
    ("The answer to this problem is 12.", "12", True),
    ("\\boxed{\\frac{\\pi}{2}}", "90^\\circ", True),
    ("\\boxed{\\int_0^1 x\\,dx}", "\\frac12", True),
    ("\\boxed{2.99}", "3", False),
    (HANG[0], HANG[1], False),
]


def _run_mixed(with_hang: bool = True):
    rows = MIXED if with_hang else MIXED[:-1]
    return [verify(r, g, timeout=1.5 if r == HANG[0] else 20.0).correct for r, g, _ in rows]


def test_verify_from_many_threads(warm_pool):
    with ThreadPoolExecutor(max_workers=4) as ex:
        results = list(ex.map(lambda k: _run_mixed(with_hang=k == 0), range(4)))
    expected = [e for _, _, e in MIXED]
    assert results[0] == expected and all(r == expected[:-1] for r in results[1:]), results


def test_verify_inside_a_running_event_loop(warm_pool):
    async def main():
        direct = _run_mixed(with_hang=False)  # blocking calls from inside the loop
        threaded = await asyncio.gather(*(asyncio.to_thread(verify, r, g, timeout=1.0 if r == HANG[0] else 20.0)
                                          for r, g, _ in MIXED))
        return direct, [v.correct for v in threaded]

    direct, threaded = asyncio.run(main())
    expected = [e for _, _, e in MIXED]
    assert direct == expected[:-1] and threaded == expected


def test_averify_keeps_the_event_loop_responsive(warm_pool):
    from mathse_rl.verify import averify

    async def main():
        ticks = 0

        async def ticker():
            nonlocal ticks
            while True:
                await asyncio.sleep(0.05)
                ticks += 1

        task = asyncio.create_task(ticker())
        v = await averify(*HANG, timeout=1.0)  # a full second of waiting on the pool
        task.cancel()
        return v, ticks

    v, ticks = asyncio.run(main())
    assert v.reason == "timeout"
    assert ticks >= 5  # the loop kept running while the call waited


def test_batch_with_two_workers_matches_one(warm_pool):
    rows = MIXED[:-1] * 40 + [("\\boxed{C}", "14", True), ("\\boxed{B}", "14", False)]
    responses, golds = [r for r, _, _ in rows], [g for _, g, _ in rows]
    choices = [["10", "12", "14", "16"] if g == "14" else None for g in golds]
    one = verify_batch(responses, golds, choices=choices, timeout=30.0, workers=1)
    two = verify_batch(responses, golds, choices=choices, timeout=30.0, workers=2)
    assert [v.correct for v in one] == [e for _, _, e in rows], [(r, v) for r, v in zip(rows, one) if v.correct != r[2]]
    assert [v.correct for v in two] == [e for _, _, e in rows], [(r, v) for r, v in zip(rows, two) if v.correct != r[2]]
    assert [v.reason for v in one] == [v.reason for v in two]


@pytest.mark.parametrize("workers", [1, 2])
def test_batch_timeout_is_per_sample(workers, warm_pool):
    warm_pool.start(wait=60.0)  # a worker killed by an earlier test has a warm successor
    start = time.monotonic()
    out = verify_batch([HANG[0], "\\boxed{7}", "\\boxed{\\sum_{k=1}^{3} k}"], [HANG[1], "7", "6"], timeout=1.5,
                       workers=workers)
    assert [(v.correct, v.reason) for v in out] == [(False, "timeout"), (True, "exact"), (True, "symbolic")]
    assert time.monotonic() - start < 2 * (1.5 + SLACK)


@pytest.mark.slow
def test_verify_inside_a_ray_actor(ray_local):
    ray = ray_local

    @ray.remote(num_cpus=0)
    class Judge:
        def run(self, rows):
            from mathse_rl.verify import verify

            return [(verify(r, g, timeout=t).correct, verify(r, g, timeout=t).reason) for r, g, t in rows]

    judge = Judge.remote()
    rows = [("\\boxed{\\int_0^1 x\\,dx}", "\\frac12", 30.0), (HANG[0], HANG[1], 1.0), ("\\boxed{7}", "7", 1.0)]
    out = ray.get(judge.run.remote(rows), timeout=120)
    assert out[0] == (True, "symbolic")
    assert out[1] == (False, "timeout")
    assert out[2][0] is True
    ray.kill(judge)


def test_import_is_cheap_and_starts_no_process():
    code = (
        "import sys, json, mathse_rl.verify as v, mathse_rl.verify.pool as p;"
        "heavy=[m for m in ('sympy','math_verify','latex2sympy2_extended','torch','trl','verl','ray') if m in sys.modules];"
        "print(json.dumps({'heavy': heavy, 'pool': p._DEFAULT is not None, "
        "'fast': v.verify('The answer to this problem is 12.', '12').correct,"
        "'heavy_after': [m for m in ('sympy','math_verify') if m in sys.modules]}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    info = json.loads(out.stdout.strip().splitlines()[-1])
    assert info == {"heavy": [], "pool": False, "fast": True, "heavy_after": []}


def test_workers_exit_when_their_parent_is_killed(tmp_path):
    """A parent killed with SIGKILL (as Ray kills actors) runs no atexit: its workers go anyway,
    even one busy with a task."""
    import signal

    code = (
        "import sys, time, threading; from mathse_rl.verify import pool;"
        "p = pool.WorkerPool(size=1, preload=False); p.call('echo', 1, timeout=60.0);"
        "threading.Thread(target=p.call, args=('sleep', 600.0, 900.0), daemon=True).start(); time.sleep(0.5);"
        "print(p.pids[0], flush=True); time.sleep(600)"
    )
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        child = int(parent.stdout.readline())
        assert not _gone(child)
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not _gone(child):
            time.sleep(0.1)
        assert _gone(child)
    finally:
        parent.kill()


def test_workers_are_cleaned_up_at_normal_exit():
    code = (
        "from mathse_rl.verify import verify, pool;"
        "print(verify('\\\\boxed{\\\\sum_{k=1}^{3} k}', '6', timeout=60.0).reason);"
        "print(*pool.get_pool().pids, flush=True)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    reason, pids = out.stdout.strip().splitlines()[-2:]
    assert reason == "symbolic"
    pids = [int(p) for p in pids.split()]
    assert pids  # the symbolic path did start workers
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not all(_gone(p) for p in pids):
        time.sleep(0.1)
    assert all(_gone(p) for p in pids)


def test_a_forked_child_gets_its_own_pool_and_leaves_the_parents_alone(warm_pool):
    from mathse_rl.verify import pool as verify_pool

    parent_pool = verify_pool.get_pool()
    parent_pids = parent_pool.pids
    assert parent_pids
    pid = os.fork()
    if pid == 0:  # child: gets a fresh pool, and its exit hook must not kill the parent's workers
        ok = False
        try:
            ok = verify_pool._DEFAULT is parent_pool and verify_pool.get_pool(min_size=1) is not parent_pool
            verify_pool.shutdown()  # what atexit runs
        finally:
            os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 0
    assert all(not _gone(p) for p in parent_pids)
    assert verify("\\boxed{\\sum_{k=1}^{3} k}", "6", timeout=30.0).reason == "symbolic"


def test_a_worker_that_cannot_start_gives_a_verdict_not_a_crash(monkeypatch):
    from mathse_rl.verify import pool as verify_pool

    broken = WorkerPool(size=1)
    monkeypatch.setattr(verify_pool.sys, "executable", "/nonexistent/python")
    monkeypatch.setattr(verify_pool, "_DEFAULT", broken)
    try:
        v = verify("\\boxed{\\sum_{k=1}^{3} k}", "6", timeout=1.0)
        assert v == v.__class__(False, "\\sum_{k=1}^{3} k", "parse_error")
    finally:
        broken.close()
