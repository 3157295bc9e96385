"""The reward ``benchmark``: a benchmark row is scored by its benchmark's own rules, any other row by
a fallback reward (``verifier`` by default). Registered through the entry-point group
``mathse_rl.rewards``, so verl's validation of a file written by ``scripts/prepare_verl_data.py
--benchmark ...`` reports the benchmark's accuracy:

    reward.custom_reward_function.path=pkg://mathse_rl.integrations.verl
    +reward.custom_reward_function.reward_kwargs.reward=benchmark

A row is a benchmark row when its ``extra`` (verl's ``extra_info``) names a ``benchmark`` and holds
its ``benchmark_meta`` (JSON: the fields the benchmark's rules read).

    >>> import json
    >>> from mathse_rl.types import RewardInput
    >>> meta = {"benchmark": "mathvista", "question_type": "free_form", "answer_type": "float", "precision": 1}
    >>> r = BenchmarkReward()
    >>> [o.score for o in r([RewardInput(question="q", response="about 1.24", gold="1.2",
    ...                                  extra={"benchmark": "mathvista", "benchmark_meta": json.dumps(meta)})])]
    [1.0]
"""

from __future__ import annotations

import json
from typing import Any, Sequence

from mathse_rl.rewards import Reward, get_reward
from mathse_rl.types import Problem, RewardInput, RewardOutput


class BenchmarkReward(Reward):
    """The benchmark's rules for benchmark rows (1.0 / 0.0), the ``fallback`` reward for the others."""

    name = "benchmark"
    # "pred" as the verifier reward names it (verl's validation votes over it for maj@N); strings are
    # skipped by verl's metric reduction.
    extras_keys = ("pred", "reason", "benchmark")

    def __init__(self, fallback: Any = "verifier", **fallback_options: Any):
        self.fallback = get_reward(fallback, **fallback_options)

    def score(self, samples: Sequence[RewardInput]) -> list[RewardOutput]:
        from mathse_rl.eval import get_benchmark

        out: list[RewardOutput | None] = [None] * len(samples)
        rest = []
        for i, s in enumerate(samples):
            name = (s.extra or {}).get("benchmark")
            if not name:
                rest.append(i)
                continue
            meta = json.loads(s.extra.get("benchmark_meta") or "{}")
            problem = Problem(id=str(s.extra.get("id", i)), question=s.question, gold=s.gold, choices=s.choices,
                              meta=meta)
            sc = get_benchmark(name).score(problem, s.response)
            score = None if sc.correct is None else float(sc.correct)
            out[i] = RewardOutput(score, {"pred": sc.prediction, "reason": sc.reason, "benchmark": name})
        if rest:
            for i, o in zip(rest, self.fallback([samples[i] for i in rest])):
                out[i] = RewardOutput(o.score, {"pred": o.extras.get("pred"), "reason": o.extras.get("reason"),
                                                "benchmark": None})
        return out  # type: ignore[return-value]
