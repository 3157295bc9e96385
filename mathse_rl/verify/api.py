"""Public entry points: ``verify`` for one response, ``verify_batch`` for many.

Both are safe from any thread, inside a running asyncio loop and inside Ray actors:
the in-process fast path is bounded by input limits, and the symbolic path runs in
the supervised worker pool with a hard wall-clock limit.

Bounded time (docs/verifier_eval.md, "Bounded time"): ``timeout`` bounds the whole call, the
wait for a free worker included. ``verify`` and ``averify`` return within ``timeout`` plus a
small slack (``SLACK``, a few milliseconds on an idle machine); ``verify_batch`` returns within
``timeout`` plus the slack after its fast path (the fast path is bounded per sample by input limits,
not by ``timeout``). An answer not judged in time is undecidable: ``Verdict(False, pred, "timeout")``.
That includes a saturated pool: when ``pool.QUEUE_LIMIT`` callers already wait for a worker, one
more is answered at once, the same way. A worker killed mid-item has that item sent again once.
"""

from __future__ import annotations

import time
from typing import Any, Sequence

from mathse_rl.types import Verdict
from mathse_rl.verify.core import fast_verify, gold_text, parse_gold
from mathse_rl.verify.extract import trim
from mathse_rl.verify.text import normalise_latex, strip_wrappers

SLACK = 0.5  # the stated bound past ``timeout`` on a loaded 2-core machine (tests hold every call to it)


def _pools():
    # Imported on first use: the pool module pulls in subprocess, which plain fast-path use never needs.
    from mathse_rl.verify import pool

    return pool


# Batches smaller than this are verified in-process when ``workers`` is not given.
_INLINE_BATCH = 512
_CHUNK_SECONDS_PER_ITEM = 0.05  # fast-path allowance per sample when a chunk runs in a worker
_CHUNK_QUEUE_WAIT = 0.1  # a chunk no worker takes this fast (busy or still starting) runs in-process instead


def _symbolic(provisional: Verdict, pred_norm: str, gold: str, deadline: float) -> Verdict:
    """The symbolic path for one answer, finished by ``deadline`` (a ``time.monotonic()`` value)."""
    gold_norm = normalise_latex(strip_wrappers(gold_text(str(gold))))
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        return Verdict(False, provisional.pred, "timeout")
    try:
        status, result = _pools().get_pool().call("symbolic", (pred_norm, gold_norm), remaining, deadline=deadline)
    except Exception:  # no worker could be started at all: the answer stays unjudged, never a crash
        return Verdict(False, provisional.pred, "parse_error")
    if status in ("timeout", "busy"):  # overran, or no worker free in time: undecidable
        return Verdict(False, provisional.pred, "timeout")
    if status != "ok" or result is None:
        return Verdict(False, provisional.pred, "parse_error")
    return Verdict(bool(result), provisional.pred, "symbolic" if result else "mismatch")


def verify(response: str, gold: str, *, choices: Sequence[str] | None = None, timeout: float = 5.0,
           strict: bool = False, cues: Sequence[str] | None = None) -> Verdict:
    """Judge one response against its reference answer, within ``timeout`` seconds in all.

    ``strict`` (acceptance in training): only a stated final answer counts — a box, an
    ``<answer>`` block or a final-answer cue (``cues``, default ``extract.DEFAULT_CUES``);
    otherwise the verdict is ``no_final_answer``. The lenient default also reads a bare
    option letter or the last number, for evaluation. ``timeout`` bounds the whole call,
    waiting for a worker included; an answer not judged by then is ``reason="timeout"``.

    >>> verify(r"The length is $\\boxed{14}$.", "C", choices=["10", "12", "14", "16"])
    Verdict(correct=True, pred='14', reason='choice')
    >>> verify("<think>maybe 3</think> The answer is A or B.", "A").reason
    'hedged'
    """
    return _verify_until(response, gold, choices, strict, cues, time.monotonic() + timeout)


def _verify_until(response: str, gold: str, choices, strict: bool, cues, deadline: float) -> Verdict:
    try:
        verdict, sym = fast_verify(response or "", gold, choices, strict, cues)
    except Exception:  # a sample the parser mishandles is wrong, never a crash
        return Verdict(False, None, "parse_error")
    if sym is None:
        return verdict
    return _symbolic(verdict, sym, gold, deadline)


async def averify(response: str, gold: str, *, choices: Sequence[str] | None = None,
                  timeout: float = 5.0, strict: bool = False, cues: Sequence[str] | None = None) -> Verdict:
    """``verify`` for coroutines: runs in a thread so a symbolic wait never blocks the event loop.
    ``timeout`` counts from this call, time spent waiting for a thread of the loop's executor
    included; past it (plus ``SLACK``) the verdict is ``reason="timeout"`` whatever the thread does.

    >>> import asyncio
    >>> asyncio.run(averify("The answer to this problem is 7.", "7")).correct
    True
    """
    import asyncio

    deadline = time.monotonic() + timeout
    job = asyncio.to_thread(_verify_until, response, gold, choices, strict, cues, deadline)
    try:
        return await asyncio.wait_for(job, timeout=max(0.0, timeout) + SLACK / 2)
    except asyncio.TimeoutError:  # no thread of the loop's executor was free in time
        return Verdict(False, None, "timeout")


def _per_sample_choices(choices, n: int) -> list:
    """One list of options for all samples, or one (possibly None) per sample."""
    if choices is None:
        return [None] * n
    choices = list(choices)
    if len(choices) == n and all(c is None or isinstance(c, (list, tuple)) for c in choices):
        return [tuple(c) if c is not None else None for c in choices]
    return [tuple(choices)] * n


def verify_batch(responses: Sequence[str], golds: Sequence[str], *, choices: Any = None, timeout: float = 5.0,
                 workers: int | None = None, strict: bool = False, cues: Sequence[str] | None = None) -> list[Verdict]:
    """``verify`` over many samples, in order; ``choices`` is one list for all or one per sample.

    ``workers``: processes sharing the fast path (None: in-process for small batches, else
    up to four). ``timeout`` bounds the symbolic stage as a whole: every sample the fast path
    left undecided is judged, or is ``reason="timeout"``, within ``timeout`` of the end of the
    fast path (the samples run side by side on the pool's workers). The fast path is bounded per
    sample by input limits. ``strict``/``cues``: as in ``verify``; a strict batch runs its fast
    path in-process (the symbolic path still uses the workers).

    >>> [v.correct for v in verify_batch(["\\\\boxed{2}", "\\\\boxed{3}"], ["2", "2"], workers=1)]
    [True, False]
    """
    n = len(responses)
    if len(golds) != n:
        raise ValueError(f"{n} responses but {len(golds)} golds")
    per = _per_sample_choices(choices, n)
    if workers is None:
        workers = 1 if n < _INLINE_BATCH else _pools().default_size()
    for g in set(map(str, golds)) if n <= 4096 else ():
        parse_gold(g)  # warm the cache once per distinct gold
    if workers <= 1 or strict:
        fast = []
        for r, g, c in zip(responses, golds, per):
            try:
                v, sym = fast_verify(r or "", g, c, strict, cues)
            except Exception:
                v, sym = Verdict(False, None, "parse_error"), None
            fast.append((v, sym))
    else:
        fast = _fast_in_workers(responses, golds, per, workers, timeout)
    out: list[Verdict | None] = [v if sym is None else None for v, sym in fast]
    pending = [i for i, (_, sym) in enumerate(fast) if sym is not None]
    if pending:
        pool = _pools().get_pool(min_size=max(1, workers))
        deadline = time.monotonic() + timeout  # one bound for the whole symbolic stage

        def one(i: int) -> Verdict:
            v, sym = fast[i]
            return _symbolic(v, sym, golds[i], deadline)

        if len(pending) == 1:
            out[pending[0]] = one(pending[0])
        else:  # side by side, so one hanging sample does not use up the others' time
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(max_workers=min(len(pending), pool.size)) as ex:
                for i, v in zip(pending, ex.map(one, pending)):
                    out[i] = v
    return out  # type: ignore[return-value]


def _fast_or_error(response, gold, choices) -> tuple[Verdict, str | None]:
    try:
        return fast_verify(response or "", gold, choices)
    except Exception:
        return Verdict(False, None, "parse_error"), None


def _fast_in_workers(responses, golds, per, workers: int, timeout: float) -> list[tuple[Verdict, str | None]]:
    n = len(responses)
    pool = _pools().get_pool(min_size=workers)
    size = max(8, -(-n // (workers * 4)))
    chunks = [list(range(s, min(n, s + size))) for s in range(0, n, size)]

    def run(idx: list[int]) -> list[tuple[Verdict, str | None]]:
        payload = [(trim(responses[i]), golds[i], per[i]) for i in idx]
        allowance = timeout + _CHUNK_SECONDS_PER_ITEM * len(idx)
        status, result = pool.call("batch", payload, timeout=allowance, queue_timeout=_CHUNK_QUEUE_WAIT)
        if status == "ok":
            return [(Verdict(c, p, r), s) for c, p, r, s in result]
        # The chunk could not be judged in a worker in time: judge it here (the fast path is bounded).
        return [_fast_or_error(responses[i], golds[i], per[i]) for i in idx]

    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=workers) as ex:
        results = list(ex.map(run, chunks))
    return [x for part in results for x in part]


def warmup(workers: int | None = None, wait: float = 30.0) -> None:
    """Start the worker pool now (instead of on first need) and wait until it answers."""
    _pools().get_pool(min_size=workers).start(n=workers, wait=wait)


def shutdown() -> None:
    """Stop the worker processes (also done at interpreter exit)."""
    _pools().shutdown()


def pool_stats() -> dict[str, float]:
    """The symbolic pool's counts: tasks, timeouts (a started task overran), queue timeouts (no worker
    free before the call's deadline), rejected calls (the queue was full), workers that died mid-task
    and tasks retried after that, and the time tasks waited for a free worker (part of ``timeout``)."""
    return _pools().get_pool().stats()


__all__ = ["verify", "averify", "verify_batch", "warmup", "shutdown", "pool_stats"]
