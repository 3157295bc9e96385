"""Weighted sums of rewards: what ``get_reward("a+b")`` and ``get_reward({"a": 0.9, "b": 0.1})`` build.

A sample's composite score is ``sum(w_i * score_i)``; it is ``None`` when any part with
a non-zero weight could not score it (e.g. the gold is unusable), so the sample is left
out rather than rewarded for its form alone. Extras are the parts' extras prefixed with
the part's name, plus each part's own score (``"verifier/score"``).
"""

from __future__ import annotations

import asyncio
from typing import Sequence

from mathse_rl.rewards.base import Reward
from mathse_rl.types import RewardInput, RewardOutput


class WeightedReward(Reward):
    """A weighted sum of other rewards, scored part by part on the same batch."""

    def __init__(self, parts: Sequence[tuple[float, Reward]], name: str):
        if not parts:
            raise ValueError("a composite reward needs at least one part")
        self.parts = [(float(w), r) for w, r in parts]
        self.name = name
        self.is_async = any(r.is_async for _, r in self.parts)
        keys: list[str] = []
        for _, r in self.parts:
            keys.append(f"{r.name}/score")
            keys.extend(f"{r.name}/{k}" for k in r.extras_keys)
        self.extras_keys = tuple(keys)

    def score(self, samples: Sequence[RewardInput]) -> list[RewardOutput]:
        return self._combine([r(samples) for _, r in self.parts])

    async def acall(self, samples: Sequence[RewardInput]) -> list[RewardOutput]:
        # async parts overlap; sync parts run in worker threads meanwhile
        results = await asyncio.gather(*(r.acall(samples) for _, r in self.parts))
        return [self._conform(o) for o in self._combine(list(results))]

    def _combine(self, per_part: list[list[RewardOutput]]) -> list[RewardOutput]:
        outs = []
        for i in range(len(per_part[0])):
            total: float | None = 0.0
            extras = {}
            for (weight, reward), results in zip(self.parts, per_part):
                out = results[i]
                extras[f"{reward.name}/score"] = out.score
                for k in reward.extras_keys:
                    extras[f"{reward.name}/{k}"] = out.extras.get(k)
                if weight == 0.0:
                    continue
                if out.score is None or total is None:
                    total = None
                else:
                    total += weight * out.score
            outs.append(RewardOutput(total, extras))
        return outs
