"""A supervised pool of worker processes with a hard wall-clock limit per task.

Signals (math-verify's own timeout) only work on the main thread of the main
interpreter; trainers call rewards from worker threads, asyncio loops and Ray actors.
Here each task goes to a separate process over a pipe; when the answer does not
arrive in time the process is killed and a fresh one is started on next need.
Workers are fresh interpreters (``python -m mathse_rl.verify.worker``, the same
isolation as the ``spawn`` context, but without re-importing the caller's
``__main__``, so a script without a main guard or a Ray actor is fine); they start
lazily and are killed at interpreter exit.

>>> pool = WorkerPool(size=1, preload=False)
>>> pool.call("echo", 3, timeout=30.0)
('ok', 3)
>>> pool.close()
"""

from __future__ import annotations

import atexit
import os
import subprocess
import sys
import threading
import time
import weakref
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

_KILL_GRACE = 0.2  # seconds to wait for a killed worker to be reaped
_RESTART_BACKOFF = 0.5  # seconds between starts after a worker died during start-up (no crash loops)


class _Proc:
    """The few process operations the pool needs, over a Popen."""

    def __init__(self, popen: subprocess.Popen):
        self.popen = popen
        self.pid = popen.pid

    def is_alive(self) -> bool:
        return self.popen.poll() is None

    def kill(self) -> None:
        try:
            self.popen.kill()
        except OSError:
            pass

    def join(self, timeout: float) -> None:
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            pass


class _Duplex:
    """A send pipe and a receive pipe presented as one connection."""

    def __init__(self, tx: Connection, rx: Connection):
        self.tx, self.rx = tx, rx

    def send(self, obj: Any) -> None:
        self.tx.send(obj)

    def recv(self) -> Any:
        return self.rx.recv()

    def poll(self, timeout: float = 0.0) -> bool:
        return self.rx.poll(timeout)

    def close(self) -> None:
        for c in (self.tx, self.rx):
            try:
                c.close()
            except OSError:
                pass


@dataclass
class _Worker:
    proc: _Proc
    conn: _Duplex
    ready: bool = False
    busy: bool = False


def _spawn_worker(preload: bool) -> tuple[_Proc, _Duplex]:
    to_child_r, to_child_w = os.pipe()
    to_parent_r, to_parent_w = os.pipe()
    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    try:
        popen = subprocess.Popen(
            [sys.executable, "-m", "mathse_rl.verify.worker", str(to_child_r), str(to_parent_w), str(int(preload))],
            pass_fds=(to_child_r, to_parent_w), stdin=subprocess.DEVNULL, env=env, close_fds=True,
        )
    except BaseException:
        os.close(to_child_w)
        os.close(to_parent_r)
        raise
    finally:
        os.close(to_child_r)
        os.close(to_parent_w)
    conn = _Duplex(Connection(to_child_w, readable=False), Connection(to_parent_r, writable=False))
    return _Proc(popen), conn


class WorkerPool:
    """Up to ``size`` worker processes, each answering one task at a time."""

    def __init__(self, size: int = 2, preload: bool = True):
        if size < 1:
            raise ValueError(f"pool size must be >= 1, got {size}")
        self.size = size
        self.preload = preload  # warm math-verify in each worker before it takes tasks
        self._workers: list[_Worker] = []
        self._cond = threading.Condition()
        self._closed = False
        self.killed = 0  # workers killed for overrunning a task (for tests and logs)
        self.started: list[int] = []  # pids of every worker ever started
        self._waiting = 0  # callers waiting for a free worker
        self._last_failure = -1e9  # when a worker last died before it was ready
        self._owner = os.getpid()  # a forked child must neither use nor kill its parent's workers
        _POOLS.add(self)

    # -------------------------------------------------------------- lifecycle
    def _start_worker(self) -> None:
        proc, conn = _spawn_worker(self.preload)
        self._workers.append(_Worker(proc, conn))
        self.started.append(proc.pid)

    def _drop(self, w: _Worker, kill: bool) -> None:
        if kill and w.proc.is_alive():
            w.proc.kill()
            self.killed += 1
        w.proc.join(_KILL_GRACE)
        try:
            w.conn.close()
        except OSError:
            pass
        with self._cond:
            if w in self._workers:
                self._workers.remove(w)
            self._cond.notify_all()

    def grow(self, size: int) -> None:
        with self._cond:
            self.size = max(self.size, size)

    def start(self, n: int | None = None, wait: float = 0.0) -> None:
        """Start workers now (up to ``n``, default all) and wait up to ``wait`` s for them."""
        with self._cond:
            while len(self._workers) < min(self.size, n or self.size):
                self._start_worker()
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            with self._cond:
                self._collect_ready()
                if all(w.ready for w in self._workers):
                    return
            time.sleep(0.02)

    def close(self) -> None:
        """Kill every worker (they hold no state worth a graceful exit) and reap them."""
        with self._cond:
            self._closed = True
            workers = list(self._workers)
            self._workers.clear()
            self._cond.notify_all()
        if os.getpid() != self._owner:
            return  # inherited through fork: the workers belong to the parent
        for w in workers:
            w.proc.kill()
        for w in workers:
            w.proc.join(_KILL_GRACE)
            w.conn.close()

    @property
    def pids(self) -> list[int]:
        with self._cond:
            return [w.proc.pid for w in self._workers if w.proc.pid is not None]

    # -------------------------------------------------------------- tasks
    def _collect_ready(self) -> None:
        for w in list(self._workers):
            if not w.ready:
                try:
                    if w.conn.poll(0):
                        w.conn.recv()
                        w.ready = True
                except (EOFError, OSError):
                    self._workers.remove(w)
                    self._last_failure = time.monotonic()  # died while starting: back off
            elif not w.busy and not w.proc.is_alive():
                self._workers.remove(w)

    def _acquire(self, deadline: float) -> _Worker | None:
        with self._cond:
            self._waiting += 1
            try:
                while True:
                    if self._closed:
                        raise RuntimeError("worker pool is closed")
                    self._collect_ready()
                    for w in self._workers:
                        if w.ready and not w.busy:
                            w.busy = True
                            return w
                    # One new worker per waiting caller beyond those already starting.
                    starting = sum(not w.ready for w in self._workers)
                    if len(self._workers) < self.size and starting < self._waiting \
                            and time.monotonic() - self._last_failure > _RESTART_BACKOFF:
                        self._start_worker()
                        continue
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return None
                    # Starting workers announce themselves on their pipe, not via the condition.
                    self._cond.wait(min(remaining, 0.01))
            finally:
                self._waiting -= 1

    def _release(self, w: _Worker) -> None:
        with self._cond:
            w.busy = False
            self._cond.notify()

    def call(self, kind: str, payload: Any, timeout: float) -> tuple[str, Any]:
        """Run one task; returns ("ok", result), ("error", message) or ("timeout", None).

        The whole call, waiting for a free worker included, ends within ``timeout`` plus
        the time to kill an overrunning worker.
        """
        deadline = time.monotonic() + max(0.0, timeout)
        w = self._acquire(deadline)
        if w is None:
            return "timeout", None
        try:
            w.conn.send((kind, payload))
            if w.conn.poll(max(0.0, deadline - time.monotonic())):
                status, result = w.conn.recv()
                self._release(w)
                return status, result
        except (EOFError, OSError, BrokenPipeError) as err:
            self._drop(w, kill=True)
            return "error", f"worker died: {err!r}"
        self._drop(w, kill=True)
        self._replace()
        return "timeout", None

    def _replace(self) -> None:
        """Start a successor for a killed worker now, so it is warm by the next task."""
        with self._cond:
            if not self._closed and len(self._workers) < self.size:
                self._start_worker()


_POOLS: "weakref.WeakSet[WorkerPool]" = weakref.WeakSet()
_DEFAULT: WorkerPool | None = None
_DEFAULT_LOCK = threading.Lock()


def default_size() -> int:
    return max(1, min(4, os.cpu_count() or 1))


def get_pool(min_size: int | None = None) -> WorkerPool:
    """The process-wide pool, created on first use (never at import)."""
    global _DEFAULT
    with _DEFAULT_LOCK:
        if _DEFAULT is None or _DEFAULT._closed or _DEFAULT._owner != os.getpid():
            _DEFAULT = WorkerPool(size=max(default_size(), min_size or 1))
        elif min_size:
            _DEFAULT.grow(min_size)
        return _DEFAULT


def shutdown() -> None:
    """Stop every pool's workers (registered with atexit)."""
    global _DEFAULT
    for pool in list(_POOLS):
        pool.close()
    with _DEFAULT_LOCK:
        _DEFAULT = None


atexit.register(shutdown)
