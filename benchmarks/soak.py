"""Soak the judge path under injected faults and print what a long run would meet.

Two loops run side by side for ``--minutes`` (default 10):

* ``verify_batch`` on mixed batches (fast-path answers, answers that need the symbolic
  worker pool, now and then one that hangs math-verify), while a fault thread SIGKILLs a
  random pool worker every ``--kill-every`` seconds;
* the HTTP judge client against a local fault-injecting server (127.0.0.1 only) whose
  replies are drawn at random: ok, slow, dripping, 429/503 with Retry-After, 500, garbage,
  oversized.

It prints calls, faults injected, items lost (an item with no verdict or judgment: must
be 0), latency percentiles against each loop's bound, RSS at start and end, and the
processes left behind after shutdown (must be 0).

    nice -n 10 python benchmarks/soak.py --minutes 10
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import statistics
import sys
import threading
import time
from collections import Counter

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from mathse_rl.orm import load_judge  # noqa: E402
from mathse_rl.orm.fault_server import FaultServer  # noqa: E402
from mathse_rl.types import RewardInput  # noqa: E402
from mathse_rl.verify import pool as verify_pool  # noqa: E402
from mathse_rl.verify import verify_batch  # noqa: E402

# (response, gold, correct?) — the symbolic ones go to the worker pool.
FAST = [("The answer to this problem is 12.", "12", True), ("\\boxed{\\frac{1}{2}}", "0.5", True),
        ("The answer is 7.", "8", False), ("\\boxed{C}", "C", True)]
SYMBOLIC = [("\\boxed{\\int_0^1 x\\,dx}", "1/2", True), ("\\boxed{\\sum_{k=1}^{3} k}", "6", True),
            ("\\boxed{\\int_0^2 x\\,dx}", "3", False), ("\\boxed{\\sqrt{8}}", "2\\sqrt{2}", True)]
HANG = ("\\boxed{\\sum_{k=1}^{10^{12}} k^{k}}", "1", False)  # only the pool's kill ends it
WRONG_PATH = "Step 1: The red bar is 6.\nStep 2: 6 + 7 = 13.\nThe answer to this problem is 13."


def rss_mb(pid: int | None = None) -> float:
    try:
        with open(f"/proc/{pid or 'self'}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20
    except OSError:
        return 0.0


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def descendants(root: int) -> list[int]:
    """Live processes below ``root`` (from /proc)."""
    parent: dict[int, int] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as f:
                    fields = f.read().split(")")[-1].split()
                parent[int(name)] = int(fields[1])
            except (OSError, IndexError, ValueError):
                pass
    out, frontier = [], [root]
    while frontier:
        p = frontier.pop()
        kids = [c for c, pp in parent.items() if pp == p]
        out.extend(kids)
        frontier.extend(kids)
    return [p for p in out if alive(p)]


def pct(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q / 100 * (len(xs) - 1))))]


class Soak:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.stop = threading.Event()
        self.rng = random.Random(args.seed)
        self.lock = threading.Lock()
        self.c: Counter[str] = Counter()
        self.verify_lat: list[float] = []
        self.run_times: list[float] = []  # per symbolic task, from its start in a worker
        self.queue_waits: list[float] = []  # per symbolic task, waiting for a free worker
        self.judge_lat: list[float] = []
        self.errors: list[str] = []

    # -- loops ------------------------------------------------------------------------
    def verify_loop(self) -> None:
        a = self.args
        n = 0
        while not self.stop.is_set():
            items = self.rng.sample(FAST, 2) + self.rng.sample(SYMBOLIC, 2)
            if n % 4 == 3:
                items.append(HANG)
                with self.lock:
                    self.c["verify/faults: hanging item"] += 1
            n += 1
            t0 = time.monotonic()
            try:
                out = verify_batch([r for r, _, _ in items], [g for _, g, _ in items], workers=2, timeout=a.timeout)
            except Exception as exc:  # counted: an exception loses the whole batch
                with self.lock:
                    self.c["verify/items lost"] += len(items)
                    self.errors.append(f"verify_batch: {exc!r}")
                continue
            dt = time.monotonic() - t0
            with self.lock:
                self.verify_lat.append(dt)
                self.c["verify/calls"] += 1
                self.c["verify/items"] += len(items)
                lost = len(items) - sum(v is not None for v in out) if len(out) == len(items) else len(items)
                self.c["verify/items lost"] += lost
                for (_, _, want), v in zip(items, out):
                    if v is None:
                        continue
                    self.c[f"verify/reason {v.reason}"] += 1
                    if v.correct and not want:
                        self.c["verify/false accepts"] += 1
                    if want and not v.correct:
                        self.c["verify/correct items not accepted (fault hit them)"] += 1

    def record_pool_calls(self, pool: verify_pool.WorkerPool) -> None:
        """Keep each task's run time and queue wait (the pool reports both on every result)."""
        call = pool.call

        def recorded(*args, **kwargs):
            out = call(*args, **kwargs)
            with self.lock:
                if out.started:
                    self.run_times.append(out.run_time)
                self.queue_waits.append(out.queue_wait)
            return out

        pool.call = recorded  # type: ignore[method-assign]

    def kill_loop(self) -> None:
        while not self.stop.wait(self.args.kill_every):
            pids = verify_pool.get_pool().ready_pids  # a worker that is working or waiting for work
            if pids:
                try:
                    os.kill(self.rng.choice(pids), signal.SIGKILL)
                    with self.lock:
                        self.c["verify/faults: worker SIGKILLed"] += 1
                except OSError:
                    pass

    def judge_loop(self, server: FaultServer) -> None:
        a = self.args
        judge = load_judge({"backend": "openai", "endpoint": server.endpoint("chaos"), "model": "m",
                            "timeout": a.judge_timeout, "max_retries": 2, "backoff": 0.05, "concurrency": 4,
                            "max_reply_bytes": 1 << 20, "fallback": "verifier"})
        self.judge = judge
        k = 0
        while not self.stop.is_set():
            items = [RewardInput(question=f"Sum of 5 and 7? ({k}.{i})", response=WRONG_PATH, gold="12")
                     for i in range(4)]
            k += 1
            t0 = time.monotonic()
            try:
                res = judge.judge_detailed(items)
            except Exception as exc:
                with self.lock:
                    self.c["judge/items lost"] += len(items)
                    self.errors.append(f"judge: {exc!r}")
                continue
            dt = time.monotonic() - t0
            with self.lock:
                self.judge_lat.append(dt)
                self.c["judge/calls"] += 1
                self.c["judge/items"] += len(items)
                self.c["judge/items lost"] += len(items) - sum(r.judgment is not None for r in res)
                for r in res:
                    self.c[f"judge/source {r.source}"] += 1
                    if r.judgment is not None and r.judgment.correct:
                        self.c["judge/false accepts"] += 1  # the path is wrong: a pass would be a fault leak

    # -- run --------------------------------------------------------------------------
    def run(self) -> int:
        a = self.args
        me = os.getpid()
        verify_pool.get_pool(min_size=2).start(n=2, wait=120.0)
        self.record_pool_calls(verify_pool.get_pool())
        rss_start = rss_mb()
        workers_rss_start = sum(rss_mb(p) for p in verify_pool.get_pool().pids)
        server = FaultServer(drip_s=0.3, slow_s=0.5, retry_after=1.0, huge_bytes=2 << 20, seed=a.seed)
        threads = [threading.Thread(target=self.verify_loop, name="verify"),
                   threading.Thread(target=self.kill_loop, name="kill"),
                   threading.Thread(target=self.judge_loop, args=(server,), name="judge")]
        t_start = time.monotonic()
        for t in threads:
            t.start()
        end = t_start + a.minutes * 60
        while time.monotonic() < end:
            time.sleep(min(5.0, max(0.0, end - time.monotonic())))
        self.stop.set()
        for t in threads:
            t.join(120)
        elapsed = time.monotonic() - t_start
        rss_end = rss_mb()
        pool = verify_pool.get_pool()
        workers_rss_end = sum(rss_mb(p) for p in pool.pids)
        pstats = pool.stats()
        ever = set()
        for p in list(verify_pool._POOLS):
            ever.update(p.started)
            ever.update(p.helpers)
        served = Counter(b for _, b, _ in server.log)
        server.close()
        verify_pool.shutdown()
        time.sleep(1.0)
        left = sorted(set(p for p in ever if alive(p)) | set(descendants(me)))
        hung_threads = [t.name for t in threads if t.is_alive()]

        c = self.c
        jm = self.judge.metrics("") if hasattr(self, "judge") else {}
        faults_server = sum(v for k, v in served.items() if k != "ok")
        print(f"soak: {elapsed / 60:.1f} min, verify timeout {a.timeout:g} s, judge timeout {a.judge_timeout:g} s "
              f"(deadline {self.judge.deadline:g} s)" if hasattr(self, "judge") else "")
        print()
        print("| loop | calls | items | faults injected | items lost | latency p50 s | p99 s | max s | bound s |")
        print("|---|---|---|---|---|---|---|---|---|")
        v_faults = c["verify/faults: worker SIGKILLed"] + c["verify/faults: hanging item"]
        print(f"| verify_batch (whole call) | {c['verify/calls']} | {c['verify/items']} | {v_faults} "
              f"({c['verify/faults: worker SIGKILLed']} worker kills, {c['verify/faults: hanging item']} hanging items) "
              f"| {c['verify/items lost']} | {pct(self.verify_lat, 50):.3f} | {pct(self.verify_lat, 99):.3f} "
              f"| {max(self.verify_lat, default=float('nan')):.3f} | - |")
        print(f"| symbolic task, from its start | {len(self.run_times)} | | | | {pct(self.run_times, 50):.3f} "
              f"| {pct(self.run_times, 99):.3f} | {max(self.run_times, default=float('nan')):.3f} "
              f"| {a.timeout + 0.5:g} (timeout + kill) |")
        print(f"| symbolic task, queue wait | {len(self.queue_waits)} | | | | {pct(self.queue_waits, 50):.3f} "
              f"| {pct(self.queue_waits, 99):.3f} | {max(self.queue_waits, default=float('nan')):.3f} "
              f"| {verify_pool.QUEUE_TIMEOUT:g} (queue limit) |")
        j_bound = self.judge.deadline + 1.0 if hasattr(self, "judge") else float("nan")
        fault_kinds = ", ".join(f"{v} {k}" for k, v in sorted(served.items()) if k != "ok")
        print(f"| judge client (batch of 4) | {c['judge/calls']} | {c['judge/items']} | {faults_server} "
              f"({fault_kinds}) | {c['judge/items lost']} | {pct(self.judge_lat, 50):.3f} "
              f"| {pct(self.judge_lat, 99):.3f} | {max(self.judge_lat, default=float('nan')):.3f} "
              f"| {j_bound:g} (deadline + 1; fallbacks use the verifier pool) |")
        print()
        print(f"RSS (MB): soak process {rss_start:.0f} -> {rss_end:.0f}; pool workers {workers_rss_start:.0f} -> "
              f"{workers_rss_end:.0f}")
        print(f"processes left behind after shutdown: {len(left)} {left if left else ''}")
        print(f"threads still running: {len(hung_threads)} {hung_threads if hung_threads else ''}")
        print()
        print("verify outcomes: " + ", ".join(f"{k[7:]}={v}" for k, v in sorted(c.items()) if k.startswith("verify/")
                                             and not k.startswith("verify/faults")))
        print("pool stats: " + ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                                         for k, v in pstats.items()))
        print("judge outcomes: " + ", ".join(f"{k[6:]}={v}" for k, v in sorted(c.items()) if k.startswith("judge/")))
        print("judge counters: " + ", ".join(f"{k}={int(v) if float(v).is_integer() else round(v, 3)}"
                                             for k, v in jm.items()))
        for e in self.errors[:5]:
            print("error:", e)
        lost = c["verify/items lost"] + c["judge/items lost"]
        return 0 if lost == 0 and not left and not hung_threads else 1


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=10.0, help="how long both loops run")
    p.add_argument("--timeout", type=float, default=5.0, help="verify_batch's per-item timeout (s)")
    p.add_argument("--judge-timeout", type=float, default=2.0, help="the judge client's per-request timeout (s)")
    p.add_argument("--kill-every", type=float, default=20.0, help="seconds between SIGKILLs of a pool worker")
    p.add_argument("--seed", type=int, default=0)
    return Soak(p.parse_args()).run()


if __name__ == "__main__":
    sys.exit(main())
