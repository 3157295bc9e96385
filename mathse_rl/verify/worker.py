"""What runs inside a verifier worker process.

Tasks arrive as ``(kind, payload)`` on a pipe and are answered with
``("ok", result)`` or ``("error", message)``. ``None`` asks the worker to exit.
The worker imports math-verify and runs one tiny check before announcing itself,
so no task's time limit is spent on start-up.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Callable

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


HANDLERS: dict[str, Callable[[Any], Any]] = {"symbolic": symbolic, "batch": batch, "echo": echo, "sleep": sleep}


def _exit_with_parent(ppid: int) -> None:
    """End this worker when its parent dies without closing it (a SIGKILLed Ray actor)."""
    import time

    while True:
        time.sleep(1.0)
        if os.getppid() != ppid:
            os._exit(0)


def main(conn, preload: bool = True) -> None:
    import threading

    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True).start()
    _limit_memory()
    if preload:
        _preload()
    # Announced only once warm: the pool never hands a task to a worker still importing.
    conn.send(("ready", os.getpid()))
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg is None:
            return
        kind, payload = msg
        try:
            result = HANDLERS[kind](payload)
            conn.send(("ok", result))
        except MemoryError:
            conn.send(("error", "memory"))
        except Exception as err:
            conn.send(("error", f"{type(err).__name__}: {err}"[:300]))


if __name__ == "__main__":
    import sys
    from multiprocessing.connection import Connection

    class _Conn:
        def __init__(self, rx: Connection, tx: Connection):
            self.rx, self.tx = rx, tx

        def recv(self):
            return self.rx.recv()

        def send(self, obj):
            self.tx.send(obj)

    main(_Conn(Connection(int(sys.argv[1]), writable=False), Connection(int(sys.argv[2]), readable=False)),
         preload=sys.argv[3:4] != ["0"])
