"""What runs inside a verifier worker process.

Tasks arrive as ``(kind, payload)`` on a pipe and are answered with
``("ok", result)`` or ``("error", message)``. ``None`` asks the worker to exit.
The worker imports math-verify and runs one tiny check before announcing itself,
so no task's time limit is spent on start-up.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from typing import Any, Callable

from mathse_rl.pipes import requests

_MEMORY_LIMIT = 4 << 30  # bytes of address space a worker may use; an expansion past it fails, not the host


def _limit_memory() -> None:
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        limit = _MEMORY_LIMIT if hard == resource.RLIM_INFINITY else min(_MEMORY_LIMIT, hard)
        resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    except (ImportError, ValueError, OSError):
        pass


def _preload() -> None:
    try:
        symbolic(("1+1", "2"))  # imports math-verify and SymPy's lazily loaded parts
        symbolic(("\\int_0^1 x dx", "1/2"))  # and SymPy's integration, seconds on a first use
    except Exception:  # a broken install shows up as an error on the first task instead
        pass


def symbolic(payload: tuple[str, str]) -> bool | None:
    """math-verify on two normalised LaTeX answers, its own signal timeouts off
    (the pool enforces the limit). None when either side does not parse."""
    pred, gold = payload
    from math_verify import parse, verify

    logging.getLogger("math_verify").setLevel(logging.ERROR)
    g = parse("\\boxed{" + gold + "}", parsing_timeout=None)
    p = parse("\\boxed{" + pred + "}", parsing_timeout=None)
    if not g or not p:
        return None
    return bool(verify(g, p, timeout_seconds=None))


def batch(payload: list[tuple[str, str, Any]]) -> list[tuple[bool, str | None, str, str | None]]:
    """The fast path over a chunk of (response, gold, choices)."""
    from mathse_rl.verify.core import fast_verify

    out = []
    for response, gold, choices in payload:
        try:
            v, sym = fast_verify(response or "", gold, choices)
            out.append((v.correct, v.pred, v.reason, sym))
        except Exception as err:  # one bad sample must not lose the chunk
            out.append((False, None, "parse_error", None))
            logging.getLogger(__name__).debug("verify failed: %r", err)
    return out


def echo(payload: Any) -> Any:
    return payload


def sleep(payload: float) -> float:
    """Busy for ``payload`` seconds (tests of the kill-on-timeout path)."""
    import time

    time.sleep(payload)
    return payload


def power(payload: tuple[int, int]) -> int:
    """The bit length of ``base ** exp``: one long C call that holds the GIL throughout (tests of
    the parent-death path, where a watcher thread could never run)."""
    base, exp = payload
    return (base ** exp).bit_length()


def crash(payload: int) -> None:
    """Exit at once without answering (tests of the crashed-worker path)."""
    os._exit(int(payload))


HANDLERS: dict[str, Callable[[Any], Any]] = {"symbolic": symbolic, "batch": batch, "echo": echo, "sleep": sleep,
                                             "power": power, "crash": crash}


_PR_SET_PDEATHSIG = 1  # from <sys/prctl.h>


def _set_pdeathsig() -> bool:
    """Ask the Linux kernel to SIGKILL this process when its parent (thread) dies."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _fork_watchdog(lifeline: int) -> int:
    """Fork a process that kills this worker when ``lifeline`` reads EOF (the pool's process is gone,
    the only holder of its write end) and exits by itself when this worker ends."""
    worker = os.getpid()
    alive_r, alive_w = os.pipe()  # this worker holds the write end: EOF for the watchdog when it ends
    pid = os.fork()
    if pid == 0:
        try:
            import select

            os.close(alive_w)
            while True:
                try:
                    ready, _, _ = select.select([lifeline, alive_r], [], [])
                except InterruptedError:
                    continue
                if alive_r in ready:
                    break  # the worker ended first: nothing to do
                if lifeline in ready and not os.read(lifeline, 1):
                    os.kill(worker, signal.SIGKILL)
                    break
        finally:
            os._exit(0)
    os.close(alive_r)
    os.close(lifeline)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the watchdog is reaped by the kernel when it exits
    return pid


def _die_with_parent(ppid: int, mode: str, lifeline: int) -> tuple[str, int | None]:
    """Arrange for this worker to end within about a second of its parent, whatever it is computing
    (nothing here needs the GIL). Returns the mechanism used and the watchdog's pid, if any."""
    if mode in ("auto", "pdeathsig") and _set_pdeathsig():
        if lifeline >= 0:
            os.close(lifeline)
        if os.getppid() != ppid:  # the parent died before the request took effect
            os._exit(0)
        return "pdeathsig", None
    if lifeline >= 0:
        watchdog = _fork_watchdog(lifeline)
        if os.getppid() != ppid:
            os._exit(0)
        return "lifeline", watchdog
    import threading  # last resort (no lifeline given): a thread, which a GIL-holding task starves

    threading.Thread(target=_exit_with_parent, args=(ppid,), daemon=True).start()
    return "thread", None


def _exit_with_parent(ppid: int) -> None:
    """End this worker when its parent dies without closing it (a SIGKILLed Ray actor)."""
    import time

    while True:
        time.sleep(1.0)
        if os.getppid() != ppid:
            os._exit(0)


def main(conn, preload: bool = True, ppid: int | None = None, death_watch: str = "auto",
         lifeline: int = -1) -> None:
    watch, watchdog = _die_with_parent(os.getppid() if ppid is None else ppid, death_watch, lifeline)
    _limit_memory()
    if preload:
        _preload()
    # Announced only once warm: the pool never hands a task to a worker still importing.
    conn.send(("ready", os.getpid(), watch, watchdog))
    for msg in requests(conn):
        kind, payload = msg
        try:
            result = HANDLERS[kind](payload)
            conn.send(("ok", result))
        except MemoryError:
            conn.send(("error", "memory"))
        except Exception as err:
            conn.send(("error", f"{type(err).__name__}: {err}"[:300]))


if __name__ == "__main__":
    from multiprocessing.connection import Connection

    class _Conn:
        def __init__(self, rx: Connection, tx: Connection):
            self.rx, self.tx = rx, tx

        def recv(self):
            return self.rx.recv()

        def send(self, obj):
            self.tx.send(obj)

    args = sys.argv[1:]
    main(_Conn(Connection(int(args[0]), writable=False), Connection(int(args[1]), readable=False)),
         preload=args[2:3] != ["0"], ppid=int(args[3]) if len(args) > 3 else None,
         death_watch=args[4] if len(args) > 4 else "auto", lifeline=int(args[5]) if len(args) > 5 else -1)
