"""The judge interface, its backend registry and the failure policy.

A backend turns items into raw replies (text, optionally P(CORRECT)); the base class
parses them against the segmented steps, scores them, and applies the declared fallback
where the backend failed or its reply did not parse. Every failure and every fallback is
counted in :attr:`Judge.counters`, which :meth:`Judge.metrics` exposes for logging.

    >>> judge = load_judge({"backend": "verifier"})                       # doctest: +SKIP
    >>> [j.status for j in judge.judge([RewardInput("1+1?", "The answer to this problem is 2.", "2")])]  # doctest: +SKIP
    ['CORRECT']
"""

from __future__ import annotations

import asyncio
import importlib
import threading
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Sequence

from mathse_rl.orm.config import JudgeConfig, judge_config
from mathse_rl.orm.parse import parse_judgment_report
from mathse_rl.orm.steps import segment_steps
from mathse_rl.types import Judgment, RewardInput


@dataclass(frozen=True)
class Reply:
    """A backend's raw answer for one item: text (+ P(CORRECT)), or the kind of failure."""

    text: str | None = None
    p_correct: float | None = None
    error: str | None = None  # e.g. "timeout", "http_500", "connection", "malformed_response"


@dataclass(frozen=True)
class JudgeResult:
    """One item's outcome: the judgment used, where it came from, and why the judge's own was not."""

    judgment: Judgment | None
    source: str  # "judge" (the backend's own reply), "verifier" (fallback) or "none"
    failure: str | None = None  # None when source == "judge"
    notes: tuple[str, ...] = ()  # non-fatal parse gaps
    raw: str = ""  # the backend's reply text, kept when a fallback replaced it


class JudgeCounters:
    """Thread-safe event counts (items, failures by kind, parse failures, fallbacks)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()

    def add(self, key: str, n: int = 1) -> None:
        with self._lock:
            self._counts[key] += n

    def __getitem__(self, key: str) -> int:
        with self._lock:
            return self._counts[key]

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)


class Judge:
    """Base class of judge backends; subclasses implement :meth:`replies` (and may override
    :meth:`areplies` when they are natively async)."""

    backend: ClassVar[str] = ""

    def __init__(self, config: JudgeConfig) -> None:
        self.config = config
        self.counters = JudgeCounters()
        self._fallback: Judge | None = None

    # -- what a backend implements -------------------------------------------------
    def replies(self, items: Sequence[RewardInput]) -> list[Reply]:
        raise NotImplementedError

    async def areplies(self, items: Sequence[RewardInput]) -> list[Reply]:
        return await asyncio.to_thread(self.replies, items)

    # -- public API ----------------------------------------------------------------
    def judge(self, items: Sequence[RewardInput]) -> list[Judgment | None]:
        """Judge a batch; an entry is None where the judge failed and the fallback could not decide
        (fallback "none", or the rule verifier without a usable gold answer)."""
        return [r.judgment for r in self.judge_detailed(items)]

    async def ajudge(self, items: Sequence[RewardInput]) -> list[Judgment | None]:
        return [r.judgment for r in await self.ajudge_detailed(items)]

    def judge_detailed(self, items: Sequence[RewardInput]) -> list[JudgeResult]:
        items = list(items)
        if not items:
            return []
        try:
            replies = self.replies(items)
        except Exception as exc:  # a crashed batch is a failure of each item, not of the run
            replies = [Reply(error=f"exception:{type(exc).__name__}")] * len(items)
        return self._finish(items, replies)

    async def ajudge_detailed(self, items: Sequence[RewardInput]) -> list[JudgeResult]:
        items = list(items)
        if not items:
            return []
        try:
            replies = await self.areplies(items)
        except Exception as exc:
            replies = [Reply(error=f"exception:{type(exc).__name__}")] * len(items)
        # Parsing and the rule-verifier fallback are blocking work: never on the caller's event loop.
        return await asyncio.to_thread(self._finish, items, replies)

    def metrics(self, prefix: str = "orm/") -> dict[str, float]:
        """Counters as floats, plus the fallback rate over judged items."""
        snap = self.counters.snapshot()
        out = {prefix + k: float(v) for k, v in sorted(snap.items())}
        items = snap.get("items", 0)
        fallbacks = snap.get("fallback/verifier", 0) + snap.get("fallback/none", 0)
        out[prefix + "fallback_rate"] = fallbacks / items if items else 0.0
        return out

    def close(self) -> None:
        """Release models or connections (no-op by default)."""

    # -- internals -----------------------------------------------------------------
    def _finish(self, items: list[RewardInput], replies: Sequence[Reply]) -> list[JudgeResult]:
        if len(replies) != len(items):
            replies = [Reply(error="backend_returned_wrong_count")] * len(items)
        self.counters.add("items", len(items))
        results: list[JudgeResult | None] = []
        failed: list[int] = []
        for i, (item, reply) in enumerate(zip(items, replies)):
            if reply.error is not None:
                self.counters.add(f"error/{reply.error}")
                results.append(JudgeResult(None, "none", reply.error))
                failed.append(i)
                continue
            report = parse_judgment_report(reply.text, segment_steps(item.response))
            if report.notes:
                self.counters.add("parse_partial")
            if report.judgment.parse_error is not None:
                self.counters.add("parse_failures")
                results.append(JudgeResult(None, "none", "parse:" + report.judgment.parse_error, report.notes,
                                           reply.text or ""))
                failed.append(i)
                continue
            j = report.judgment
            if reply.p_correct is not None:
                j = _replace(j, score=float(reply.p_correct))
            self.counters.add("judged")
            results.append(JudgeResult(j, "judge", None, report.notes, j.raw))
        if failed:
            self._apply_fallback(items, results, failed)
        return results  # type: ignore[return-value]

    def _apply_fallback(self, items: list[RewardInput], results: list, failed: list[int]) -> None:
        if self.config.fallback == "none":
            self.counters.add("fallback/none", len(failed))
            return
        if self._fallback is None:
            from mathse_rl.orm.backends.verifier import VerifierJudge

            self._fallback = VerifierJudge(self.config)
        backup = self._fallback.judge_detailed([items[i] for i in failed])
        self.counters.add("fallback/verifier", len(failed))
        for i, b in zip(failed, backup):
            marked = _replace(b.judgment, source="verifier") if b.judgment is not None else None
            results[i] = JudgeResult(marked, "verifier" if marked is not None else "none",
                                     results[i].failure, results[i].notes, results[i].raw)


def _replace(j: Judgment, **changes: Any) -> Judgment:
    import dataclasses

    return dataclasses.replace(j, **changes)


# -- registry ----------------------------------------------------------------------
JUDGE_BACKENDS: dict[str, type[Judge]] = {}
# Built-in backends live in modules imported on first use, so importing the package stays light.
_BUILTIN_MODULES = {
    "local": "mathse_rl.orm.backends.local",
    "openai": "mathse_rl.orm.backends.openai",
    "verifier": "mathse_rl.orm.backends.verifier",
}


def register_backend(name: str) -> Callable[[type[Judge]], type[Judge]]:
    """Class decorator: make a :class:`Judge` subclass loadable as ``backend=name``."""

    def deco(cls: type[Judge]) -> type[Judge]:
        cls.backend = name
        JUDGE_BACKENDS[name] = cls
        return cls

    return deco


def get_backend(name: str) -> type[Judge]:
    if name not in JUDGE_BACKENDS and name in _BUILTIN_MODULES:
        importlib.import_module(_BUILTIN_MODULES[name])
    try:
        return JUDGE_BACKENDS[name]
    except KeyError:
        known = sorted(set(JUDGE_BACKENDS) | set(_BUILTIN_MODULES))
        raise KeyError(f"unknown judge backend {name!r}; known backends: {known}") from None


def list_backends() -> list[str]:
    return sorted(set(JUDGE_BACKENDS) | set(_BUILTIN_MODULES))


def load_judge(config: Any = None, *, loaded_model: Any = None, loaded_processor: Any = None,
               **overrides: Any) -> Judge:
    """Build a judge from a config (dict, OmegaConf, :class:`JudgeConfig`) plus keyword overrides.

    ``loaded_model`` / ``loaded_processor`` hand an already loaded model to the local backend.
    """
    cfg = judge_config(config, **overrides)
    cls = get_backend(cfg.backend)
    if loaded_model is not None or loaded_processor is not None:
        return cls(cfg, model=loaded_model, processor=loaded_processor)  # type: ignore[call-arg]
    return cls(cfg)
