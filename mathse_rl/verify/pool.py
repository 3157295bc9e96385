"""A supervised pool of worker processes with a hard wall-clock limit per task.

Signals (math-verify's own timeout) only work on the main thread of the main
interpreter; trainers call rewards from worker threads, asyncio loops and Ray actors.
Here each task goes to a separate process over a pipe; when the answer does not
arrive in time the process is killed and a fresh one is started on next need.
Workers are fresh interpreters (``python -m mathse_rl.verify.worker``, the same
isolation as the ``spawn`` context, but without re-importing the caller's
``__main__``, so a script without a main guard or a Ray actor is fine); they start
lazily and are killed at interpreter exit.

Every failure frees the worker: a task whose input does not pickle is refused with a
ValueError before a worker is taken; an interrupt (Ctrl-C) or any other exception
while a task runs kills that worker (its late answer must not reach the next caller);
a worker that overruns, crashes or is killed is replaced. A task's ``timeout`` counts
from the moment a worker starts it; the wait for a free worker is bounded separately
(``queue_timeout``) and reported on each result and in :meth:`WorkerPool.stats`.

No worker outlives its parent by more than about a second, whatever it computes
(a big-integer power holds the GIL for minutes, so a watcher thread inside the
worker would never run). On Linux each worker asks the kernel for SIGKILL when its
parent goes (``prctl(PR_SET_PDEATHSIG)``): immediate, no extra process, no GIL. The
kernel ties that signal to the parent *thread* that started the child, so workers are
started from one daemon thread that lives as long as the interpreter, never from a
caller's short-lived thread. Elsewhere (or with ``death_watch="lifeline"``) each worker
forks a tiny watchdog process blocked on a "lifeline" pipe whose only write end the
pool's process holds: when that process dies, however it dies, the read returns EOF
and the watchdog kills the worker; it also exits when its worker does.

>>> pool = WorkerPool(size=1, preload=False)
>>> pool.call("echo", 3, timeout=30.0)
('ok', 3)
>>> pool.close()
"""

from __future__ import annotations

import atexit
import concurrent.futures
import os
import pickle
import queue
import subprocess
import sys
import threading
import time
import weakref
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any, Callable

_KILL_GRACE = 0.2  # seconds to wait for a killed worker to be reaped
_RESTART_BACKOFF = 0.5  # seconds between starts after a worker died during start-up (no crash loops)
QUEUE_TIMEOUT = 300.0  # default seconds a task may wait for a free worker (not part of its own timeout)
DEATH_WATCHES = ("auto", "pdeathsig", "lifeline")  # auto: pdeathsig on Linux, else the lifeline watchdog


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

    def send_bytes(self, data: bytes) -> None:
        self.tx.send_bytes(data)

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
    watch: str = ""  # how it dies with its parent, as the worker reported it


class Outcome(tuple):
    """A task's result: unpacks as ``(status, result)`` like a plain pair, and also says how long
    the task waited for a worker (``queue_wait``), how long it ran (``run_time``) and whether a
    worker started it at all (``started``; False when the queue wait ran out)."""

    def __new__(cls, status: str, result: Any, queue_wait: float = 0.0, run_time: float = 0.0,
                started: bool = True) -> "Outcome":
        self = super().__new__(cls, (status, result))
        self.queue_wait, self.run_time, self.started = queue_wait, run_time, started
        return self

    @property
    def status(self) -> str:
        return self[0]

    @property
    def result(self) -> Any:
        return self[1]


class _Spawner:
    """Starts worker processes from one daemon thread that lives as long as the interpreter
    (the parent-death signal fires when the starting *thread* ends)."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        threading.Thread(target=self._run, name="mathse-verify-spawner", daemon=True).start()

    def _run(self) -> None:
        while True:
            fn, fut = self._jobs.get()
            if fut.set_running_or_notify_cancel():
                try:
                    fut.set_result(fn())
                except BaseException as err:  # handed to the caller, whatever it is
                    fut.set_exception(err)

    def submit(self, fn: Callable[[], Any]) -> concurrent.futures.Future:
        fut: concurrent.futures.Future = concurrent.futures.Future()
        self._jobs.put((fn, fut))
        return fut


_SPAWNER: _Spawner | None = None
_LIFELINE: tuple[int, int, int] | None = None  # (pid, read end, write end), one per process
_PROCESS_LOCK = threading.Lock()


def _spawner() -> _Spawner:
    global _SPAWNER
    with _PROCESS_LOCK:
        if _SPAWNER is None or _SPAWNER.pid != os.getpid():
            _SPAWNER = _Spawner()
        return _SPAWNER


def _lifeline_fd() -> int:
    """The read end of this process's lifeline pipe; the write end is never written nor closed
    (it closes when the process dies, which is the signal)."""
    global _LIFELINE
    with _PROCESS_LOCK:
        if _LIFELINE is None or _LIFELINE[0] != os.getpid():
            r, w = os.pipe()
            _LIFELINE = (os.getpid(), r, w)
        return _LIFELINE[1]


def _after_fork_in_child() -> None:
    global _PROCESS_LOCK
    _PROCESS_LOCK = threading.Lock()  # another thread may have held it at fork time


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _spawn_worker(preload: bool, death_watch: str = "auto") -> tuple[_Proc, _Duplex]:
    to_child_r, to_child_w = os.pipe()
    to_parent_r, to_parent_w = os.pipe()
    lifeline = _lifeline_fd()
    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    try:
        popen = subprocess.Popen(
            [sys.executable, "-m", "mathse_rl.verify.worker", str(to_child_r), str(to_parent_w), str(int(preload)),
             str(os.getpid()), death_watch, str(lifeline)],
            pass_fds=(to_child_r, to_parent_w, lifeline), stdin=subprocess.DEVNULL, env=env, close_fds=True,
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


def _discard_spawned(fut: concurrent.futures.Future) -> None:
    """A worker started for a caller that was interrupted meanwhile: nobody will use it."""
    if not fut.cancelled() and fut.exception() is None:
        proc, conn = fut.result()
        proc.kill()
        proc.join(_KILL_GRACE)
        conn.close()


class WorkerPool:
    """Up to ``size`` worker processes, each answering one task at a time."""

    def __init__(self, size: int = 2, preload: bool = True, queue_timeout: float = QUEUE_TIMEOUT,
                 death_watch: str = "auto"):
        if size < 1:
            raise ValueError(f"pool size must be >= 1, got {size}")
        if death_watch not in DEATH_WATCHES:
            raise ValueError(f"death_watch must be one of {DEATH_WATCHES}, got {death_watch!r}")
        self.size = size
        self.preload = preload  # warm math-verify in each worker before it takes tasks
        self.queue_timeout = queue_timeout  # seconds a task may wait for a free worker
        self.death_watch = death_watch  # how workers die with this process (see the module docstring)
        self._workers: list[_Worker] = []
        self._cond = threading.Condition()
        self._closed = False
        self.killed = 0  # workers killed for overrunning a task (for tests and logs)
        self.started: list[int] = []  # pids of every worker ever started
        self.helpers: list[int] = []  # pids of the workers' watchdog processes (death_watch "lifeline")
        self._waiting = 0  # callers waiting for a free worker
        self._last_failure = -1e9  # when a worker last died before it was ready
        self._owner = os.getpid()  # a forked child must neither use nor kill its parent's workers
        self._stats = {"calls": 0, "ok": 0, "errors": 0, "timeouts": 0, "queue_timeouts": 0, "died": 0,
                       "interrupted": 0, "queue_wait_total": 0.0, "queue_wait_max": 0.0, "run_time_max": 0.0}
        _POOLS.add(self)

    # -------------------------------------------------------------- lifecycle
    def _start_worker(self) -> None:
        fut = _spawner().submit(lambda: _spawn_worker(self.preload, self.death_watch))
        try:
            proc, conn = fut.result()
        except BaseException:
            if not fut.done():  # interrupted while the spawner works: kill the worker when it arrives
                fut.add_done_callback(_discard_spawned)
            raise
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
    def watches(self) -> list[str]:
        """How each ready worker dies with this process ("pdeathsig", "lifeline" or "thread")."""
        with self._cond:
            return [w.watch for w in self._workers if w.ready]

    @property
    def ready_pids(self) -> list[int]:
        """Pids of the workers that have finished starting (busy or idle)."""
        with self._cond:
            return [w.proc.pid for w in self._workers if w.ready]

    @property
    def pids(self) -> list[int]:
        with self._cond:
            return [w.proc.pid for w in self._workers if w.proc.pid is not None]

    def stats(self) -> dict[str, float]:
        """Counts since the pool was made: tasks sent (``calls``), ``ok``, ``errors``, ``timeouts``
        (a started task overran), ``queue_timeouts`` (no worker in time), ``died`` (a worker crashed or
        was killed mid-task), ``interrupted``, ``killed``, and the queue wait (total, max) and the
        longest run in seconds."""
        with self._cond:
            return {**self._stats, "killed": self.killed, "workers": len(self._workers)}

    def _note(self, **changes: float) -> None:
        with self._cond:
            for k, v in changes.items():
                if k.endswith("_max"):
                    self._stats[k] = max(self._stats[k], v)
                else:
                    self._stats[k] += v

    # -------------------------------------------------------------- tasks
    def _collect_ready(self) -> None:
        for w in list(self._workers):
            if not w.ready:
                try:
                    if w.conn.poll(0):
                        msg = w.conn.recv()
                        w.ready = True
                        w.watch = msg[2] if len(msg) > 2 else ""
                        if len(msg) > 3 and msg[3]:
                            self.helpers.append(msg[3])
                except (EOFError, OSError):
                    self._workers.remove(w)
                    w.proc.join(0)
                    w.conn.close()
                    self._last_failure = time.monotonic()  # died while starting: back off
            elif not w.busy and not w.proc.is_alive():
                self._workers.remove(w)  # died while idle (killed from outside)
                w.conn.close()

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

    def call(self, kind: str, payload: Any, timeout: float, queue_timeout: float | None = None) -> Outcome:
        """Run one task; returns ("ok", result), ("error", message) or ("timeout", None) as an :class:`Outcome`.

        ``timeout`` counts from the moment a worker starts the task; the wait for a free worker is
        bounded by ``queue_timeout`` (default: the pool's) and reported as ``Outcome.queue_wait``.
        An input that cannot be pickled raises ValueError before any worker is taken.
        """
        try:
            data = pickle.dumps((kind, payload), protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as err:
            raise ValueError(f"the input of a {kind!r} task cannot be sent to a worker process "
                             f"(it must be picklable): {type(err).__name__}: {err}") from err
        t0 = time.monotonic()
        limit = self.queue_timeout if queue_timeout is None else queue_timeout
        w: _Worker | None = None
        waited = started = 0.0
        try:
            w = self._acquire(t0 + max(0.0, limit))
            waited = time.monotonic() - t0
            self._note(queue_wait_total=waited, queue_wait_max=waited)
            if w is None:
                self._note(queue_timeouts=1)
                return Outcome("timeout", None, waited, 0.0, started=False)
            started = time.monotonic()
            self._note(calls=1)
            w.conn.send_bytes(data)
            if w.conn.poll(max(0.0, timeout)):
                status, result = w.conn.recv()
                ran = time.monotonic() - started
                self._release(w)
                w = None
                self._note(run_time_max=ran, **{"ok" if status == "ok" else "errors": 1})
                return Outcome(status, result, waited, ran)
            ran = time.monotonic() - started
            self._drop(w, kill=True)
            w = None
            self._note(timeouts=1, run_time_max=ran)
            self._replace()
            return Outcome("timeout", None, waited, ran)
        except (EOFError, OSError) as err:  # the worker crashed or was killed mid-task
            if w is not None:
                self._drop(w, kill=True)
                w = None
                self._note(died=1)
                self._replace()
            ran = time.monotonic() - started if started else 0.0
            return Outcome("error", f"worker died: {err!r}", waited, ran, started=bool(started))
        except BaseException:
            # Interrupted (Ctrl-C) or failed while a worker held the task: kill it, or its late answer
            # would be read by the next caller, and the pool would count it busy forever.
            if w is not None:
                self._drop(w, kill=True)
                self._note(interrupted=1)
            raise

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
