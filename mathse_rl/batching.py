"""Collect concurrent single-item requests for a few milliseconds and serve them in one call.

verl runs every rollout sample (and every reward-loop sample) as its own coroutine; a judge,
a reward or an ORM endpoint is much cheaper per item when it sees them together. The batcher
turns ``await batcher.submit(item)`` from many coroutines into one ``await fn(items)`` (used by
verl's ``mathse`` reward manager and by :meth:`mathse_rl.step.Judge.ajudge_one`):

>>> import asyncio
>>> async def double(xs): return [2 * x for x in xs]
>>> async def main():
...     batcher = MicroBatcher(double, max_batch=8, window_s=0.001)
...     return await asyncio.gather(*(batcher.submit(x) for x in range(3))), batcher.calls
>>> asyncio.run(main())
([0, 2, 4], 1)

A failure of ``fn`` fails every request of its batch with that exception (callers decide the
fallback), a cancelled batch with ``CancelledError``: no caller is ever left waiting. A
synchronous ``fn`` runs in a thread so it never blocks the event loop.
"""

from __future__ import annotations

import asyncio
import inspect
from typing import Any, Awaitable, Callable, Generic, Sequence, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class MicroBatcher(Generic[T, R]):
    """Serves ``submit(item)`` calls made within ``window_s`` of each other with one ``fn(items)``."""

    def __init__(self, fn: Callable[[list[T]], Awaitable[Sequence[R]] | Sequence[R]], max_batch: int = 64,
                 window_s: float = 0.005):
        self.fn, self.max_batch, self.window_s = fn, max(1, int(max_batch)), max(0.0, float(window_s))
        self._is_async = inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(getattr(fn, "__call__", None))
        self._pending: list[tuple[T, asyncio.Future]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._running: set[asyncio.Task] = set()  # strong references: the loop keeps only weak ones
        self.calls = 0  # batches served
        self.items = 0  # items served

    async def submit(self, item: T) -> R:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._pending.append((item, future))
        if len(self._pending) >= self.max_batch:
            self._flush()
        elif self._timer is None:
            self._timer = loop.call_later(self.window_s, self._flush)
        return await future

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        batch, self._pending = self._pending, []
        if batch:
            task = asyncio.ensure_future(self._run(batch))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _run(self, batch: list[tuple[T, asyncio.Future]]) -> None:
        items = [item for item, _ in batch]
        self.calls += 1
        self.items += len(items)
        try:
            if self._is_async:
                results: Any = await self.fn(items)  # type: ignore[misc]
            else:
                results = await asyncio.to_thread(self.fn, items)
            results = list(results)
            if len(results) != len(items):
                raise RuntimeError(f"batch function returned {len(results)} results for {len(items)} items")
        except BaseException as exc:  # noqa: BLE001 - handed to every waiting caller
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc if isinstance(exc, Exception) else asyncio.CancelledError())
            if not isinstance(exc, Exception):
                raise
            return
        for (_, future), result in zip(batch, results):
            if not future.done():
                future.set_result(result)
