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
a worker that overruns, crashes or is killed is replaced, in the background (no caller
waits for a process to start or be reaped). A task's ``timeout`` counts from the moment a
worker starts it; a call's ``deadline`` bounds the whole call, the wait for a free worker
included (``verify`` always sets one); without a deadline the wait is bounded by
``queue_timeout``. At most ``max_waiting`` callers wait at once: one more is answered
"busy" at once. A task whose worker dies under it is sent again, once. Waits, rejections
and retries are reported on each result and in :meth:`WorkerPool.stats`.

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
QUEUE_TIMEOUT = 300.0  # default seconds a task may wait for a free worker, when the caller sets no deadline
QUEUE_LIMIT = 64  # default callers that may wait for a free worker at once; one more is answered "busy" at once
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
    """Up to ``size`` worker processes, each answering one task at a time.

    ``max_waiting`` bounds the callers waiting for a free worker at once: one more is answered at
    once with status ``"busy"`` (the queue is full, the pool is saturated). ``queue_timeout``
    bounds each wait; a call's ``deadline`` bounds the whole call, wait included.
    """

    def __init__(self, size: int = 2, preload: bool = True, queue_timeout: float = QUEUE_TIMEOUT,
                 death_watch: str = "auto", max_waiting: int = QUEUE_LIMIT):
        if size < 1:
            raise ValueError(f"pool size must be >= 1, got {size}")
        if death_watch not in DEATH_WATCHES:
            raise ValueError(f"death_watch must be one of {DEATH_WATCHES}, got {death_watch!r}")
        if max_waiting < 0:
            raise ValueError(f"max_waiting must be >= 0, got {max_waiting}")
        self.size = size
        self.preload = preload  # warm math-verify in each worker before it takes tasks
        self.queue_timeout = queue_timeout  # seconds a task may wait for a free worker
        self.max_waiting = max_waiting  # callers that may wait for a free worker at once; beyond: "busy"
        self.death_watch = death_watch  # how workers die with this process (see the module docstring)
        self._workers: list[_Worker] = []
        self._cond = threading.Condition()
        self._closed = False
        self.killed = 0  # workers killed for overrunning a task (for tests and logs)
        self.started: list[int] = []  # pids of every worker ever started
        self.helpers: list[int] = []  # pids of the workers' watchdog processes (death_watch "lifeline")
        self._waiting = 0  # callers waiting for a free worker
        self._spawning = 0  # workers being started in the background
        self._spawn_error: BaseException | None = None  # why the last background start failed
        self._last_failure = -1e9  # when a worker last died before it was ready, or could not be started
        self._owner = os.getpid()  # a forked child must neither use nor kill its parent's workers
        self._stats = {"calls": 0, "ok": 0, "errors": 0, "timeouts": 0, "queue_timeouts": 0, "rejected": 0,
                       "died": 0, "retried": 0, "interrupted": 0, "queue_wait_total": 0.0, "queue_wait_max": 0.0,
                       "run_time_max": 0.0}
        _POOLS.add(self)

    # -------------------------------------------------------------- lifecycle
    def _spawn_async(self) -> None:
        """Start one worker in the background (caller holds ``_cond``); it joins the pool when its process
        exists, and announces itself warm on its pipe. Nobody waits here: a caller's deadline never pays
        for a process start."""
        self._spawning += 1

        def done(fut: concurrent.futures.Future) -> None:
            with self._cond:
                self._spawning -= 1
                err = fut.exception()
                if err is not None:
                    self._spawn_error, self._last_failure = err, time.monotonic()
                elif self._closed:
                    _discard_spawned(fut)
                else:
                    proc, conn = fut.result()
                    self._spawn_error = None
                    self._workers.append(_Worker(proc, conn))
                    self.started.append(proc.pid)
                self._cond.notify_all()

        _spawner().submit(lambda: _spawn_worker(self.preload, self.death_watch)).add_done_callback(done)

    def _retire(self, w: _Worker, kill: bool) -> None:
        """Take ``w`` out of the pool now (SIGKILL when ``kill``); reaping it happens in the background."""
        with self._cond:
            if w in self._workers:
                self._workers.remove(w)
            if kill and w.proc.is_alive():
                w.proc.kill()
                self.killed += 1
            self._cond.notify_all()

        def reap() -> None:
            w.proc.join(_KILL_GRACE)
            try:
                w.conn.close()
            except OSError:
                pass

        _spawner().submit(reap)

    def _drop(self, w: _Worker, kill: bool) -> None:
        self._retire(w, kill)

    def grow(self, size: int) -> None:
        with self._cond:
            self.size = max(self.size, size)

    def start(self, n: int | None = None, wait: float = 0.0) -> None:
        """Start workers now (up to ``n``, default all) and wait up to ``wait`` s for them to be warm."""
        with self._cond:
            while len(self._workers) + self._spawning < min(self.size, n or self.size):
                self._spawn_async()
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            with self._cond:
                self._collect_ready()
                if not self._spawning and all(w.ready for w in self._workers):
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
        """Counts since the pool was made: tasks sent (``calls``), ``ok``, ``errors``, ``timeouts`` (a started
        task overran), ``queue_timeouts`` (no worker free in time), ``rejected`` (the queue was full),
        ``died`` (a worker crashed or was killed mid-task), ``retried`` (tasks sent again after that),
        ``interrupted``, ``killed``, and the queue wait (total, max) and the longest run in seconds."""
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

    def _take_free(self) -> _Worker | None:
        """A warm idle worker, marked busy (caller holds ``_cond``), or None."""
        if self._closed:
            raise RuntimeError("worker pool is closed")
        self._collect_ready()
        for w in self._workers:
            if w.ready and not w.busy:
                w.busy = True
                return w
        return None

    def _acquire(self, deadline: float) -> _Worker | None | str:
        """A free, warm worker; None when ``deadline`` passes first; "busy" when the queue is full."""
        with self._cond:
            free = self._take_free()
            if free is not None:
                return free
            if self._waiting >= self.max_waiting:
                return "busy"
            self._waiting += 1
            try:
                while True:
                    free = self._take_free()
                    if free is not None:
                        return free
                    # One new worker per waiting caller beyond those already starting, started in the background.
                    starting = sum(not w.ready for w in self._workers) + self._spawning
                    if len(self._workers) + self._spawning < self.size and starting < self._waiting \
                            and time.monotonic() - self._last_failure > _RESTART_BACKOFF:
                        self._spawn_async()
                        continue
                    if self._spawn_error is not None and not self._workers and not self._spawning:
                        raise RuntimeError(f"no verifier worker could be started: {self._spawn_error!r}")
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

    def call(self, kind: str, payload: Any, timeout: float, queue_timeout: float | None = None,
             deadline: float | None = None, retries: int = 1) -> Outcome:
        """Run one task; returns ("ok", result), ("error", message), ("timeout", None) or ("busy", None)
        as an :class:`Outcome`.

        ``timeout`` counts from the moment a worker starts the task; the wait for a free worker is
        bounded by ``queue_timeout`` (default: the pool's) and reported as ``Outcome.queue_wait``.
        ``deadline`` (a ``time.monotonic()`` value) bounds the whole call, the wait included: past it
        the task is not started, or its worker is killed. ``busy``: the queue was full (``max_waiting``
        callers already waiting), answered at once. A worker that dies mid-task (crash, outside kill)
        has the task sent again, ``retries`` times, within the same limits.
        An input that cannot be pickled raises ValueError before any worker is taken.
        """
        try:
            data = pickle.dumps((kind, payload), protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as err:
            raise ValueError(f"the input of a {kind!r} task cannot be sent to a worker process "
                             f"(it must be picklable): {type(err).__name__}: {err}") from err
        t0 = time.monotonic()
        limit = self.queue_timeout if queue_timeout is None else queue_timeout
        wait_until = t0 + max(0.0, limit)
        if deadline is not None:
            wait_until = min(wait_until, deadline)
        run_budget = max(0.0, timeout)
        waited = ran = 0.0
        for attempt in range(max(0, retries) + 1):
            out = self._attempt(data, wait_until, run_budget, deadline)
            waited += out.queue_wait
            ran += out.run_time
            if out.status != "died":
                return Outcome(out.status, out.result, waited, ran, out.started)
            run_budget -= out.run_time  # the retry gets what the item had left
            if attempt < retries:
                if run_budget <= 0 or (deadline is not None and time.monotonic() >= deadline):
                    return Outcome("timeout", None, waited, ran, True)
                self._note(retried=1)
        return Outcome("error", out.result, waited, ran, True)

    def _attempt(self, data: bytes, wait_until: float, run_budget: float, deadline: float | None) -> Outcome:
        """One try: ("died", message) when the worker died mid-task, else the task's outcome."""
        t0 = time.monotonic()
        w: _Worker | None = None
        waited = started = 0.0
        try:
            got = self._acquire(wait_until)
            waited = time.monotonic() - t0
            self._note(queue_wait_total=waited, queue_wait_max=waited)
            if got == "busy":
                self._note(rejected=1)
                return Outcome("busy", None, waited, 0.0, started=False)
            if got is None:
                self._note(queue_timeouts=1)
                return Outcome("timeout", None, waited, 0.0, started=False)
            w = got  # type: ignore[assignment]
            started = time.monotonic()
            budget = run_budget if deadline is None else min(run_budget, deadline - started)
            self._note(calls=1)
            w.conn.send_bytes(data)
            if w.conn.poll(max(0.0, budget)):
                status, result = w.conn.recv()
                ran = time.monotonic() - started
                self._release(w)
                w = None
                self._note(run_time_max=ran, **{"ok" if status == "ok" else "errors": 1})
                return Outcome(status, result, waited, ran)
            ran = time.monotonic() - started
            self._retire(w, kill=True)
            w = None
            self._note(timeouts=1, run_time_max=ran)
            self._replace()
            return Outcome("timeout", None, waited, ran)
        except (EOFError, OSError) as err:  # the worker crashed or was killed mid-task
            ran = time.monotonic() - started if started else 0.0
            if w is not None:
                self._retire(w, kill=True)
                w = None
                self._note(died=1)
                self._replace()
            return Outcome("died", f"worker died: {err!r}", waited, ran, started=bool(started))
        except BaseException:
            # Interrupted (Ctrl-C) or failed while a worker held the task: kill it, or its late answer
            # would be read by the next caller, and the pool would count it busy forever.
            if w is not None:
                self._retire(w, kill=True)
                self._note(interrupted=1)
            raise

    def _replace(self) -> None:
        """Start a successor for a retired worker now (in the background), so it is warm by the next task."""
        with self._cond:
            if not self._closed and len(self._workers) + self._spawning < self.size:
                self._spawn_async()


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
