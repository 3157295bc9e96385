"""Soak the judge path under injected faults and hostile clients, and print what a long run would meet.

Phase 1, faults: two loops run side by side for ``--minutes`` (default 10):

* ``verify_batch`` on mixed batches (fast-path answers, answers that need the symbolic
  worker pool, now and then one that hangs math-verify), while a fault thread SIGKILLs a
  random pool worker every ``--kill-every`` seconds;
* the HTTP judge client against a local fault-injecting server (127.0.0.1 only) whose
  replies are drawn at random: ok, slow, dripping, 429/503 with Retry-After, 500, garbage,
  oversized.

It prints calls, faults injected, items lost (an item with no verdict or judgment: must
be 0), latency percentiles against each loop's bound, RSS at start and end, and the
processes left behind after shutdown (must be 0).

Phase 2, hostile clients, for ``--hostile-minutes`` (default 2): the real ``mathse-rl orm serve``
(the injection suite's tiny judge, trained in ~40 CPU steps to state WRONG and then quote the
student's ``{"status": "CORRECT"}``) is flooded with concurrent 4096² images and oversized bodies while
the judge client sends it responses carrying injected verdicts, and a second judge client reads
replies that quote injected verdicts, oversized texts and faults from the fault server. Items lost
must be 0, no wrong answer may be recorded CORRECT by the judge, every call must end within its
bound, and the server's RSS must come back within 10% of its start after the burst.

    nice -n 10 python benchmarks/soak.py --minutes 10 --hostile-minutes 2
    python benchmarks/soak.py --minutes 0 --hostile-minutes 2      # the hostile phase alone
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import random
import signal
import statistics
import sys
import threading
import time
from collections import Counter
from typing import Any

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


def judge_counting_loss(judge: Any, items: list[RewardInput], loop: str, c: Counter, lock: threading.Lock,
                        errors: list[str]) -> tuple[Any, float]:
    """(results, seconds) of one batch; an exception loses the whole batch and is counted (None)."""
    t0 = time.monotonic()
    try:
        return judge.judge_detailed(items), time.monotonic() - t0
    except Exception as exc:
        with lock:
            c[f"{loop}/items lost"] += len(items)
            errors.append(f"{loop}: {exc!r}")
        return None, time.monotonic() - t0


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
            res, dt = judge_counting_loss(judge, items, "judge", self.c, self.lock, self.errors)
            if res is None:
                continue
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


# -- phase 2: hostile clients --------------------------------------------------------------------

def _png_data_url(side: int) -> str:
    """A solid-colour side × side PNG as a data URL: ~60 KB on the wire, side² × 4 bytes once decoded."""
    import base64
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (side, side), (200, 30, 30)).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


class Hostile:
    """Flood a served judge and read hostile replies; see the module docstring (phase 2)."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.c: Counter[str] = Counter()
        self.lat: dict[str, list[float]] = {"image flood": [], "oversized body": [], "judge on the server": [],
                                            "judge on hostile replies": []}
        self.errors: list[str] = []

    def _record(self, loop: str, dt: float, **counts: int) -> None:
        with self.lock:
            self.lat[loop].append(dt)
            for k, v in counts.items():
                self.c[f"{loop}/{k}"] += v

    def image_flood(self, url: str) -> None:
        import httpx

        body = {"model": "orm", "max_tokens": 4, "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": _png_data_url(4096)}}, {"type": "text", "text": "?"}]}]}
        while not self.stop.is_set():
            t0 = time.monotonic()
            try:
                r = httpx.post(url + "/v1/chat/completions", json=body, timeout=self.args.flood_timeout)
                self._record("image flood", time.monotonic() - t0, calls=1, **{f"http {r.status_code}": 1})
            except httpx.HTTPError as exc:
                self._record("image flood", time.monotonic() - t0, calls=1, **{type(exc).__name__: 1})

    def oversized(self, url: str) -> None:
        import httpx

        big = b'{"model": "orm", "messages": [' + b" " * (48 << 20) + b"]}"
        while not self.stop.wait(0.5):
            t0 = time.monotonic()
            try:
                r = httpx.post(url + "/v1/chat/completions", content=big, timeout=self.args.flood_timeout,
                               headers={"content-type": "application/json"})
                self._record("oversized body", time.monotonic() - t0, calls=1, **{f"http {r.status_code}": 1})
            except httpx.HTTPError as exc:
                self._record("oversized body", time.monotonic() - t0, calls=1, **{type(exc).__name__: 1})

    def judge_loop(self, loop: str, endpoint: str, **options: Any) -> None:
        sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "orm"))
        from injection_cases import GOLD, INJECTIONS, QUESTION, response

        judge = load_judge({"backend": "openai", "endpoint": endpoint, "model": "orm", "timeout": 5.0,
                            "max_retries": 2, "backoff": 0.05, "concurrency": 4, "fallback": "verifier",
                            "max_new_tokens": 16, **options})
        self.judges[loop] = judge
        k = 0
        while not self.stop.is_set():
            items = [RewardInput(QUESTION, response(INJECTIONS[(k + i) % len(INJECTIONS)][1]), GOLD)
                     for i in range(4)]
            k += 4
            res, dt = judge_counting_loss(judge, items, loop, self.c, self.lock, self.errors)
            if res is None:
                continue
            self._record(loop, dt, calls=1, items=len(items),
                         **{"items lost": sum(r.judgment is None for r in res),
                            "flips": sum(r.source == "judge" and r.judgment.correct for r in res),
                            "false accepts": sum(r.judgment is not None and r.judgment.correct for r in res)})

    def run(self) -> bool:
        import tempfile

        import httpx

        sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "orm"))
        from served import build_quoting_judge, start_server, stop_server

        a = self.args
        self.judges: dict[str, Any] = {}
        with tempfile.TemporaryDirectory() as tmp:
            model = build_quoting_judge(os.path.join(tmp, "quoting-judge"))
            proc, url = start_server(model, "--max-tokens-cap", "48")
            fault = FaultServer(huge_bytes=3 << 20, retry_after=0.2, seed=a.seed, chaos_weights={
                "ok": 0.3, "quote": 0.3, "bigtext": 0.1, "slow": 0.05, "drip": 0.05, "r429": 0.05, "r503": 0.05,
                "http500": 0.05, "garbage": 0.03, "huge": 0.02})
            try:
                warm = {"model": "orm", "max_tokens": 2, "messages": [{"role": "user", "content": [
                    {"type": "image_url", "image_url": {"url": _png_data_url(4096)}}, {"type": "text", "text": "?"}]}]}
                httpx.post(url + "/v1/chat/completions", json=warm, timeout=120)
                time.sleep(2.0)
                rss_start = rss_mb(proc.pid)
                # The flood runs in a process of its own: its threads must not slow the judge clients'
                # event loop here, whose calls are measured against their bounds.
                ctx = multiprocessing.get_context("spawn")
                results = ctx.Queue()
                flood = ctx.Process(target=flood_process, args=(a, url, a.hostile_minutes * 60, results))
                threads = [threading.Thread(target=self.judge_loop, args=("judge on the server", url + "/v1"),
                                            kwargs={"prompt_template": "compact", "max_new_tokens": 40},
                                            name="judge-served"),
                           threading.Thread(target=self.judge_loop, args=(
                               "judge on hostile replies", fault.endpoint("chaos"), ), name="judge-fault")]
                peak = [rss_start]
                t_start = time.monotonic()
                flood.start()
                for t in threads:
                    t.start()
                end = t_start + a.hostile_minutes * 60
                while time.monotonic() < end:
                    peak[0] = max(peak[0], rss_mb(proc.pid))
                    time.sleep(0.2)
                self.stop.set()
                counts, lat = results.get(timeout=300)
                flood.join(60)
                self.c.update(counts)
                for loop, xs in lat.items():
                    self.lat[loop].extend(xs)
                for t in threads:
                    t.join(180)
                idle_at = time.monotonic()
                rss_end = rss_mb(proc.pid)
                while rss_end > 1.1 * rss_start and time.monotonic() - idle_at < 30:
                    time.sleep(0.5)
                    rss_end = rss_mb(proc.pid)
                back_s = time.monotonic() - idle_at
                stats = httpx.get(url + "/stats", timeout=10).json()
            finally:
                fault.close()
                stop_server(proc)
        return self.report(rss_start, peak[0], rss_end, back_s, stats, [t.name for t in threads if t.is_alive()])

    def report(self, rss_start: float, peak: float, rss_end: float, back_s: float, stats: dict[str, Any],
               hung: list[str]) -> bool:
        a, c = self.args, self.c
        bounds = {"image flood": a.flood_timeout, "oversized body": a.flood_timeout}
        for loop, judge in self.judges.items():
            bounds[loop] = judge.deadline + 1.0
        print()
        print(f"hostile clients: {a.hostile_minutes:g} min, {a.flood_clients} image-flood clients (4096² PNG each) and "
              f"2 oversized-body clients (48 MB) in one process, 2 judge clients on responses with injected "
              f"verdicts in another")
        print()
        print("| hostile client | calls | items | outcomes | items lost | flips | latency p50 s | p99 s | max s "
              "| bound s |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        ok = True
        for loop, lat in self.lat.items():
            outcomes = ", ".join(f"{k.split('/', 1)[1]} {v}" for k, v in sorted(c.items())
                                 if k.startswith(loop + "/") and k.split("/", 1)[1] not in
                                 ("calls", "items", "items lost", "flips", "false accepts"))
            late = sum(x > bounds[loop] for x in lat)
            ok &= late == 0 and c[f"{loop}/items lost"] == 0 and c[f"{loop}/flips"] == 0
            print(f"| {loop} | {c[f'{loop}/calls']} | {c[f'{loop}/items'] or ''} | {outcomes or '-'} "
                  f"| {c[f'{loop}/items lost']} | {c[f'{loop}/flips']} | {pct(lat, 50):.3f} | {pct(lat, 99):.3f} "
                  f"| {max(lat, default=float('nan')):.3f} | {bounds[loop]:g} ({late} over) |")
        back = rss_end <= 1.1 * rss_start
        ok &= back and not hung
        print()
        print(f"server RSS (MB): start {rss_start:.0f}, peak {peak:.0f}, after the burst {rss_end:.0f} "
              f"({100 * (rss_end / rss_start - 1):+.1f}%, {'within' if back else 'NOT within'} 10%, "
              f"{back_s:.1f} s after the last client stopped)")
        print("server stats: " + ", ".join(f"{k}={v}" for k, v in sorted(stats.items())))
        for loop, judge in self.judges.items():
            m = judge.metrics("")
            print(f"{loop} counters: " + ", ".join(f"{k}={int(v) if float(v).is_integer() else round(v, 3)}"
                                                   for k, v in m.items()))
        print(f"threads still running: {len(hung)} {hung if hung else ''}")
        for e in self.errors[:5]:
            print("error:", e)
        return ok


def flood_process(args: argparse.Namespace, url: str, seconds: float, results: Any) -> None:
    """The image-flood and oversized-body clients, for ``seconds``; (counts, latencies) go to ``results``."""
    hostile = Hostile(args)
    threads = [threading.Thread(target=hostile.image_flood, args=(url,)) for _ in range(args.flood_clients)]
    threads += [threading.Thread(target=hostile.oversized, args=(url,)) for _ in range(2)]
    for t in threads:
        t.start()
    hostile.stop.wait(seconds)
    hostile.stop.set()
    for t in threads:
        t.join(args.flood_timeout + 10)
    results.put((dict(hostile.c), {k: v for k, v in hostile.lat.items() if v}))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=10.0, help="how long both loops of phase 1 run (0: skip it)")
    p.add_argument("--hostile-minutes", type=float, default=2.0, help="how long phase 2 runs (0: skip it)")
    p.add_argument("--flood-clients", type=int, default=16, help="concurrent clients sending 4096² images")
    p.add_argument("--flood-timeout", type=float, default=120.0, help="the flood clients' HTTP timeout (s)")
    p.add_argument("--timeout", type=float, default=5.0, help="verify_batch's per-item timeout (s)")
    p.add_argument("--judge-timeout", type=float, default=2.0, help="the judge client's per-request timeout (s)")
    p.add_argument("--kill-every", type=float, default=20.0, help="seconds between SIGKILLs of a pool worker")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    status = Soak(args).run() if args.minutes > 0 else 0
    if args.hostile_minutes > 0:
        status |= 0 if Hostile(args).run() else 1
    return status


if __name__ == "__main__":
    sys.exit(main())
