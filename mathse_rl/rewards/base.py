"""The reward protocol: a batch of ``RewardInput`` in, one ``RewardOutput`` per sample out.

A reward is framework-neutral; the trl and verl adapters convert at their boundary.

>>> class Length(Reward):
...     name = "length"
...     extras_keys = ("chars",)
...     def score(self, samples):
...         return [RewardOutput(min(len(s.response), 10) / 10, {"chars": len(s.response)})
...                 for s in samples]
>>> [o.score for o in Length()([RewardInput(question="q", response="abc", gold="1")])]
[0.3]
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from typing import Any, Sequence

from mathse_rl.types import RewardInput, RewardOutput

logger = logging.getLogger(__name__)


class Reward:
    """Base class of every reward. Subclasses implement :meth:`score`.

    ``is_async`` says the reward calls a model or a service (the trl adapter then
    hands trl an ``async def`` callable so trl overlaps it with other rewards).
    ``extras_keys`` are the keys of ``RewardOutput.extras``; :meth:`__call__` makes
    every output carry exactly these keys (missing ones become ``None``), which is
    what verl's reward loop and trl's ``log_extra`` need to stack them into columns.
    """

    name: str = ""
    is_async: bool = False
    extras_keys: tuple[str, ...] = ()

    def score(self, samples: Sequence[RewardInput]) -> list[RewardOutput]:
        """Score a batch; return one output per sample, in order."""
        raise NotImplementedError(f"{type(self).__name__} must implement score()")

    def settings(self) -> dict[str, Any]:
        """The options that decide this reward's scores, which the MathSE step compares with its
        judge's at start (:func:`mathse_rl.step.verdict_mismatches`); ``{}`` when there are none.
        A reward that scores with a judge (``self.judge.config``, the ORM) reports that config."""
        config = getattr(getattr(self, "judge", None), "config", None)
        if dataclasses.is_dataclass(config) and not isinstance(config, type):
            return dataclasses.asdict(config)
        return {}

    def __call__(self, samples: Sequence[RewardInput]) -> list[RewardOutput]:
        samples = list(samples)
        if not samples:
            return []
        try:
            outs = list(self.score(samples))
            if len(outs) != len(samples):
                raise ValueError(f"reward {self.name!r} returned {len(outs)} outputs for {len(samples)} samples")
        except Exception as exc:  # one bad sample must not sink the batch: retry one by one
            logger.warning("reward %r failed on a batch of %d (%s); scoring one by one",
                           self.name, len(samples), exc)
            outs = [self._score_one(s) for s in samples]
        return [self._conform(o) for o in outs]

    async def acall(self, samples: Sequence[RewardInput]) -> list[RewardOutput]:
        """Async form of ``__call__``; the default runs it in a worker thread."""
        return await asyncio.to_thread(self.__call__, samples)

    def _score_one(self, sample: RewardInput) -> RewardOutput:
        try:
            out = list(self.score([sample]))
            if len(out) == 1:
                return out[0]
            raise ValueError(f"{len(out)} outputs for one sample")
        except Exception as exc:
            logger.warning("reward %r could not score a sample (%s: %s); scored None",
                           self.name, type(exc).__name__, exc)
            return RewardOutput(None, {})

    def _conform(self, out: RewardOutput) -> RewardOutput:
        extras = out.extras or {}
        if tuple(extras) == self.extras_keys:
            return out
        score = None if out.score is None else float(out.score)
        return RewardOutput(score, {k: extras.get(k) for k in self.extras_keys})

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


def describe(reward: Reward) -> dict[str, Any]:
    """A short description of a reward for listings and logs."""
    doc = (type(reward).__doc__ or "").strip().splitlines()
    return {"name": reward.name, "is_async": reward.is_async,
            "extras_keys": list(reward.extras_keys), "doc": doc[0] if doc else ""}
