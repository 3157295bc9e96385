"""The ORM as a reward: ``orm`` (the judge's score) and ``orm_gated`` (verifier first).

``orm`` scores each sample with the judge: P(CORRECT) when the backend reads it from the
logits, else 1.0/0.0. ``orm_gated`` asks the judge only where the rule verifier says the
answer is right or cannot decide, so a right answer reached by wrong reasoning is caught
and a wrong answer costs no judge call. Failures follow the judge's fallback policy
(rule verifier by default, else None); nothing unjudged is scored 1.0.

    >>> from mathse_rl.rewards import get_reward                                     # doctest: +SKIP
    >>> reward = get_reward("orm", backend="openai", endpoint="http://127.0.0.1:8000/v1", model="orm")  # doctest: +SKIP

Options are :class:`~mathse_rl.orm.config.JudgeConfig` fields (``backend``, ``model``,
``endpoint``, ``reward_router_address``, ``api_key_env``, ``fallback``, ...), so verl's
``reward_kwargs`` and trl recipes configure the judge directly. Judges are shared per
configuration within a process, so a model is loaded once however often the reward is built.
"""

from __future__ import annotations

import dataclasses
import json
import threading
from typing import Any, Sequence

from mathse_rl.orm.config import judge_config
from mathse_rl.orm.judge import Judge, JudgeResult, load_judge
from mathse_rl.rewards.base import Reward
from mathse_rl.rewards.registry import register_reward
from mathse_rl.types import RewardInput, RewardOutput

_JUDGES: dict[str, Judge] = {}
_LOCK = threading.Lock()


def shared_judge(config: Any = None, **options: Any) -> Judge:
    """One judge per distinct configuration in this process."""
    cfg = judge_config(config, **options)
    key = json.dumps(dataclasses.asdict(cfg), sort_keys=True, default=str)
    with _LOCK:
        if key not in _JUDGES:
            _JUDGES[key] = load_judge(cfg)
        return _JUDGES[key]


def release_shared_judges() -> int:
    """Close and forget the judges :func:`shared_judge` holds (a local model is freed once nothing else holds
    it; the next use loads it again), e.g. before a fine-tune needs the GPU. Returns how many."""
    with _LOCK:
        judges = list(_JUDGES.values())
        _JUDGES.clear()
    for judge in judges:
        judge.close()
    return len(judges)


def _output(result: JudgeResult) -> RewardOutput:
    j = result.judgment
    extras = {
        "status": j.status if j else None,
        "error_step": j.error_step if j else None,
        "source": result.source,
        "failure": result.failure,
    }
    return RewardOutput(None if j is None else float(j.score), extras)


@register_reward("orm")
class ORMReward(Reward):
    """The judge's P(CORRECT) (or 1.0/0.0); None where it failed and the fallback is "none".

    Extras: ``status``, ``error_step``, ``source`` ("judge", "verifier" fallback or "none")
    and ``failure`` (why the judge's own answer was not used).
    """

    name = "orm"
    is_async = True
    extras_keys = ("status", "error_step", "source", "failure")

    def __init__(self, judge: Judge | None = None, config: Any = None, **options: Any) -> None:
        self.judge = judge if judge is not None else shared_judge(config, **options)

    def score(self, samples: Sequence[RewardInput]) -> list[RewardOutput]:
        return [_output(r) for r in self.judge.judge_detailed(samples)]

    async def acall(self, samples: Sequence[RewardInput]) -> list[RewardOutput]:
        samples = list(samples)
        if not samples:
            return []
        try:
            results = await self.judge.ajudge_detailed(samples)
        except Exception:  # judges do not raise, but a reward never sinks a training step
            return await super().acall(samples)
        return [self._conform(_output(r)) for r in results]

    def metrics(self) -> dict[str, float]:
        """The judge's counters (items, failures by kind, parse failures, fallbacks)."""
        return self.judge.metrics()


@register_reward("orm_gated")
class GatedORMReward(ORMReward):
    """Verifier first; the judge only where the verifier says right or cannot decide.

    A verifier-rejected answer scores 0.0 without a judge call; otherwise the judge's score
    counts, so a right answer with wrong reasoning scores low. Extras add ``verifier``
    (the verdict's reason) and ``gate`` ("rejected" or "judged").
    """

    name = "orm_gated"
    extras_keys = ORMReward.extras_keys + ("verifier", "gate")

    def _gate(self, samples: Sequence[RewardInput]) -> tuple[list[RewardOutput | None], list[int]]:
        from mathse_rl.verify import verify

        outs: list[RewardOutput | None] = []
        ask: list[int] = []
        for i, s in enumerate(samples):
            try:
                verdict = verify(s.response, s.gold, choices=s.choices, timeout=self.judge.config.verifier_timeout)
                reason, decided_wrong = verdict.reason, (not verdict.correct and verdict.reason not in ("no_gold", "timeout"))
            except Exception as exc:
                reason, decided_wrong = f"error:{type(exc).__name__}", False
            if decided_wrong:
                self.judge.counters.add("gate/rejected")
                outs.append(RewardOutput(0.0, {"status": "WRONG", "error_step": None, "source": "verifier",
                                               "failure": None, "verifier": reason, "gate": "rejected"}))
            else:
                self.judge.counters.add("gate/judged")
                outs.append(RewardOutput(None, {"verifier": reason}))
                ask.append(i)
        return outs, ask

    @staticmethod
    def _merge(outs: list[RewardOutput | None], ask: list[int], results: list[JudgeResult]) -> list[RewardOutput]:
        for i, r in zip(ask, results):
            o = _output(r)
            outs[i] = RewardOutput(o.score, {**o.extras, "verifier": outs[i].extras["verifier"], "gate": "judged"})
        return outs  # type: ignore[return-value]

    def score(self, samples: Sequence[RewardInput]) -> list[RewardOutput]:
        outs, ask = self._gate(samples)
        results = self.judge.judge_detailed([samples[i] for i in ask]) if ask else []
        return self._merge(outs, ask, results)

    async def acall(self, samples: Sequence[RewardInput]) -> list[RewardOutput]:
        import asyncio

        samples = list(samples)
        if not samples:
            return []
        outs, ask = await asyncio.to_thread(self._gate, samples)
        results = await self.judge.ajudge_detailed([samples[i] for i in ask]) if ask else []
        return [self._conform(o) for o in self._merge(outs, ask, results)]
