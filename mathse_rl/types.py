"""The records that flow through every part of mathse-rl.

Each concept has exactly one record, defined here as a frozen dataclass.
Framework adapters (trl, verl) convert to and from these at the boundary.

>>> p = Problem(id="q1", question="What is 3 + 4?", gold="7")
>>> a = Attempt(problem_id=p.id, response="3 + 4 = 7. The answer to this problem is 7.", source="sampled")
>>> a.source
'sampled'
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping, Sequence

# Where a reasoning path in the training pool came from.
Source = Literal["distilled", "sampled", "reflected"]
SOURCES: tuple[str, ...] = ("distilled", "sampled", "reflected")

Status = Literal["CORRECT", "WRONG"]


@dataclass(frozen=True)
class Problem:
    """A question with its reference answer.

    ``images`` hold PIL images or paths/URLs to them; ``choices`` are the options
    of a multiple-choice question in order (A, B, C, ...).
    """

    id: str
    question: str
    gold: str | None
    images: tuple[Any, ...] = ()
    choices: tuple[str, ...] | None = None
    data_source: str = ""
    meta: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Verdict:
    """The rule-based verifier's decision on one response.

    ``reason`` is one of: "exact", "numeric", "symbolic", "choice", "text",
    "no_answer", "mismatch", "hedged" (several options offered: "A or B"),
    "timeout", "too_long", "parse_error", "no_gold", "no_final_answer" (strict mode:
    the response never states its final answer).
    """

    correct: bool
    pred: str | None
    reason: str

    @property
    def score(self) -> float:
        return 1.0 if self.correct else 0.0


# Verifier reasons for which a response can be neither accepted nor rejected: no (or an unreadable)
# gold, a comparison that ran out of time. The one definition the judge, the rewards and the critic read.
UNDECIDABLE_REASONS: frozenset[str] = frozenset({"no_gold", "timeout"})


@dataclass(frozen=True)
class Judgment:
    """The ORM's diagnostic verdict on one reasoning path (MathSE's judge output).

    ``error_step`` is the 1-based index of the first wrong step (None when correct
    or unknown); ``score`` is P(correct) when the backend exposes it, else 1.0/0.0.
    ``parse_error`` says what could not be parsed from ``raw`` (None when clean);
    ``source`` says whether the judge itself or its fallback decided.
    """

    status: Status
    error_step: int | None = None
    error_step_text: str = ""
    error_analysis: str = ""
    improvement_suggestion: str = ""
    score: float = 0.0
    raw: str = ""
    parse_error: str | None = None
    source: str = "judge"  # who decided: "judge" (the configured judge itself) or the fallback's name ("verifier")

    @property
    def correct(self) -> bool:
        return self.status == "CORRECT"

    @property
    def fallback(self) -> bool:
        """True when the declared fallback, not the judge, produced this judgment (filter these out
        where only the judge's own verdicts may count)."""
        return self.source != "judge"


@dataclass(frozen=True)
class Attempt:
    """One reasoning path for a problem, with how it was judged.

    ``parent`` holds the wrong response a reflected attempt was written from.
    """

    problem_id: str
    response: str
    source: Source
    round: int = 0
    correct: bool | None = None
    verdict: Verdict | None = None
    judgment: Judgment | None = None
    parent: str | None = None
    meta: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RewardInput:
    """What a reward sees for one sample, whichever framework produced it."""

    question: str
    response: str
    gold: str | None
    choices: tuple[str, ...] | None = None
    images: tuple[Any, ...] = ()
    data_source: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RewardOutput:
    """A reward's score (None when the sample cannot be scored) plus logged extras.

    Every output of one reward carries the same ``extras`` keys, so frameworks that
    stack extras into columns (verl's reward loop, trl's ``log_extra``) line up.
    """

    score: float | None
    extras: Mapping[str, Any] = field(default_factory=dict)


def to_dict(record: Any) -> dict[str, Any]:
    """A JSON-friendly dict of a record (images are left out: they are not JSON)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(record):
        value = getattr(record, f.name)
        if f.name == "images":
            continue
        if dataclasses.is_dataclass(value):
            value = to_dict(value)
        elif isinstance(value, Mapping):
            value = dict(value)
        elif isinstance(value, tuple):
            value = list(value)
        out[f.name] = value
    return out


def as_tuple(values: Sequence[Any] | None) -> tuple[Any, ...] | None:
    """``None`` stays None; any other sequence becomes a tuple (frozen records need it)."""
    return None if values is None else tuple(values)
