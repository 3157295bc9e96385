"""Public entry points: ``verify`` for one response, ``verify_batch`` for many."""

from __future__ import annotations

from typing import Sequence

from mathse_rl.types import Verdict
from mathse_rl.verify.core import fast_verify


def verify(response: str, gold: str, *, choices: Sequence[str] | None = None, timeout: float = 5.0) -> Verdict:
    """Judge one response against its reference answer.

    >>> verify(r"The length is $\\boxed{14}$.", "C", choices=["10", "12", "14", "16"])
    Verdict(correct=True, pred='14', reason='choice')
    """
    verdict, _ = fast_verify(response or "", gold, choices)
    return verdict


def verify_batch(responses, golds, *, choices=None, timeout: float = 5.0, workers: int | None = None) -> list[Verdict]:
    """``verify`` over many samples; ``choices`` is one list for all or one per sample."""
    n = len(responses)
    per = _per_sample_choices(choices, n)
    return [verify(r, g, choices=c, timeout=timeout) for r, g, c in zip(responses, golds, per)]


def _per_sample_choices(choices, n: int) -> list:
    if choices is None:
        return [None] * n
    if len(choices) == n and all(c is None or isinstance(c, (list, tuple)) for c in choices) and \
            any(isinstance(c, (list, tuple)) for c in choices):
        return list(choices)
    return [choices] * n


def warmup() -> None:
    """Start the symbolic worker pool now instead of on first need."""


def shutdown() -> None:
    """Stop the symbolic worker pool (also done at interpreter exit)."""
