"""Built-in rewards: ``verifier`` (is the final answer right?) and ``format`` (is it stated?).

>>> from mathse_rl.types import RewardInput
>>> s = RewardInput(question="2+3?", response="2+3=5. The answer to this problem is 5.", gold="5")
>>> [(o.score, o.extras["form"]) for o in FormatReward()([s])]
[(1.0, 'statement')]
"""

from __future__ import annotations

import importlib
import re
from typing import Sequence

from mathse_rl.rewards.base import Reward
from mathse_rl.rewards.registry import register_reward
from mathse_rl.types import UNDECIDABLE_REASONS, RewardInput, RewardOutput


@register_reward("verifier")
class VerifierReward(Reward):
    """1.0 when the rule-based verifier accepts the final answer, 0.0 when it rejects it, None when it
    cannot decide (no or unreadable gold, a comparison past ``timeout``).

    Extras: ``pred`` (the extracted answer) and ``reason`` (the verdict's reason).
    ``strict=True`` (the default: this is a training reward) scores 0.0 a response that never
    states its final answer (reason ``no_final_answer``) instead of reading its last number, the
    rule the MathSE step's judge applies (``require_final_answer``); ``strict=False`` is the lenient
    reading evaluation uses. ``cues``: the final-answer phrases strict mode looks for (None: the
    verifier's defaults).
    """

    name = "verifier"
    extras_keys = ("pred", "reason")

    def __init__(self, timeout: float = 5.0, strict: bool = True, cues: Sequence[str] | None = None):
        self.timeout = float(timeout)  # seconds allowed per answer comparison (past it: undecidable, None)
        self.strict = bool(strict)  # only a stated final answer counts (acceptance in training)
        self.cues = None if cues is None else tuple(str(c) for c in cues)  # final-answer cues of strict mode
        self._verify = importlib.import_module("mathse_rl.verify")

    def settings(self) -> dict:
        """What decides this reward's verdicts (compared with the step judge's at start)."""
        return {"timeout": self.timeout, "strict": self.strict, "cues": self.cues}

    def score(self, samples: Sequence[RewardInput]) -> list[RewardOutput]:
        todo = [i for i, s in enumerate(samples) if _has_gold(s.gold)]
        outs = [RewardOutput(None, {"pred": None, "reason": "no_gold"}) for _ in samples]
        verdicts = self._verdicts([samples[i] for i in todo])
        for i, verdict in zip(todo, verdicts):
            score = None if verdict.reason in UNDECIDABLE_REASONS else verdict.score
            outs[i] = RewardOutput(score, {"pred": verdict.pred, "reason": verdict.reason})
        return outs

    def _verdicts(self, samples: list[RewardInput]):
        if not samples:
            return []
        options = {"timeout": self.timeout, "strict": self.strict, **({"cues": self.cues} if self.cues else {})}
        batch = getattr(self._verify, "verify_batch", None)
        if batch is not None:
            per_sample = [s.choices for s in samples]
            # one choices list per sample; None when no sample has any
            choices = per_sample if any(c for c in per_sample) else None
            return list(batch([s.response for s in samples], [s.gold for s in samples], choices=choices, **options))
        return [self._verify.verify(s.response, s.gold, choices=s.choices, **options) for s in samples]


def _has_gold(gold: object) -> bool:
    return gold is not None and str(gold).strip() != ""


# "The answer to this problem is X" with a non-empty X, or a non-empty \boxed{...}.
_STATEMENT = re.compile(r"the answer to this problem is\s*:?\s*(?P<x>[^\s.][^\n]*)", re.IGNORECASE)
_BOXED = re.compile(r"\\boxed\s*\{\s*(?P<x>[^}\s][^}]*)\}")


@register_reward("format")
class FormatReward(Reward):
    """1.0 when the response states its final answer in the expected form, else 0.0.

    The expected forms are MathSE's closing sentence "The answer to this problem is X"
    and ``\\boxed{X}``. Needs no gold. Extras: ``form`` ("statement", "boxed" or None)
    and ``pred`` (the stated answer).
    """

    name = "format"
    extras_keys = ("form", "pred")
    decides_correctness = False  # shapes a reward; never accepts a path as a judge (mathse_rl.step)

    def __init__(self, forms: Sequence[str] = ("statement", "boxed")):
        unknown = set(forms) - {"statement", "boxed"}
        if unknown:
            raise ValueError(f"unknown answer forms {sorted(unknown)}; known: statement, boxed")
        self.forms = tuple(forms)  # which answer forms count as well-formed

    def score(self, samples: Sequence[RewardInput]) -> list[RewardOutput]:
        return [self._one(s) for s in samples]

    def _one(self, sample: RewardInput) -> RewardOutput:
        text = sample.response or ""
        patterns = {"statement": _STATEMENT, "boxed": _BOXED}
        best = None  # (position, form, stated answer) of the last well-formed statement
        for form in self.forms:
            for match in patterns[form].finditer(text):
                if best is None or match.start() > best[0]:
                    best = (match.start(), form, match.group("x").strip().rstrip(".").strip())
        if best is None:
            return RewardOutput(0.0, {"form": None, "pred": None})
        _, form, pred = best
        extract = _extract_answer()
        if extract is not None:  # the verifier's own reading of the answer, when available
            try:
                pred = extract(text, sample.choices) or pred
            except Exception:
                pass
        return RewardOutput(1.0, {"form": form, "pred": pred})


def _extract_answer():
    try:
        return getattr(importlib.import_module("mathse_rl.verify"), "extract_answer", None)
    except Exception:
        return None
