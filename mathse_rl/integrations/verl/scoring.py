"""verl's ``compute_score`` interface over the reward registry.

Point verl's custom reward function at this package and name the reward::

    reward.custom_reward_function.path=pkg://mathse_rl.integrations.verl
    reward.custom_reward_function.name=compute_score          # verl's default
    +reward.custom_reward_function.reward_kwargs.reward=verifier   # or verifier+format, orm, ...

>>> compute_score("demo", "... The answer to this problem is 5.", "5", reward="format")["score"]
1.0

The result is a dict with ``score`` (what verl puts on the last response token), ``acc``
(the score, or None when the sample could not be scored), ``scored`` and the reward's extras;
every sample gets the same keys, which verl's reward loop stacks into columns. A sample the
reward cannot score (missing or unusable gold) gets ``unscored_value`` (default 0.0) as
its score and ``scored=False``.
"""

from __future__ import annotations

import json
import threading
from typing import Any, Mapping

from mathse_rl.rewards import Reward, get_reward
from mathse_rl.types import RewardInput, RewardOutput

DEFAULT_REWARD = "verifier"

_cache: dict[str, Reward] = {}
_cache_lock = threading.Lock()


def _plain(value: Any) -> Any:
    """OmegaConf containers (verl passes its config pieces) -> plain Python."""
    if hasattr(value, "_metadata") and hasattr(value, "items"):  # DictConfig without importing omegaconf
        from omegaconf import OmegaConf

        return OmegaConf.to_container(value, resolve=True)
    return value


def reward_for(spec: Any = DEFAULT_REWARD, options: Mapping[str, Any] | None = None,
               reward_router_address: str | None = None) -> Reward:
    """The reward for a spec and options, built once per process (verl calls per sample).

    ``reward_router_address`` (verl's reward-model router, when it runs one) is handed to
    rewards that take it (the ORM) and dropped for those that do not.
    """
    spec, options = _plain(spec), dict(_plain(options) or {})
    if reward_router_address is not None and "reward_router_address" not in options:
        try:
            return reward_for(spec, {**options, "reward_router_address": reward_router_address})
        except TypeError:
            pass
    key = json.dumps([spec, options], sort_keys=True, default=repr)
    reward = _cache.get(key)
    if reward is None:
        with _cache_lock:
            reward = _cache.get(key)
            if reward is None:
                reward = _cache[key] = get_reward(spec, **options)
    return reward


def sample_from_verl(data_source: Any, solution_str: str, ground_truth: Any,
                     extra_info: Mapping[str, Any] | None, question: str = "",
                     images: tuple[Any, ...] = ()) -> RewardInput:
    """A ``RewardInput`` from verl's per-sample fields (choices and question from ``extra_info``)."""
    extra = dict(_plain(extra_info) or {})
    choices = extra.get("choices")
    if choices is not None and not isinstance(choices, (list, tuple)):
        choices = list(choices) if hasattr(choices, "__iter__") and not isinstance(choices, str) else None
    gold = None if ground_truth is None else str(ground_truth)
    return RewardInput(
        question=question or str(extra.get("question") or ""),
        response=solution_str or "",
        gold=gold,
        choices=tuple(str(c) for c in choices) if choices else None,
        images=images,
        data_source=str(data_source or ""),
        extra=extra,
    )


def result_dict(reward: Reward, out: RewardOutput, unscored_value: float = 0.0) -> dict[str, Any]:
    """verl's per-sample result: same keys for every sample of one reward."""
    scored = out.score is not None
    result: dict[str, Any] = {
        "score": float(out.score) if scored else float(unscored_value),
        "acc": float(out.score) if scored else None,
        "scored": scored,
    }
    for key in reward.extras_keys:
        result[key] = out.extras.get(key)
    return result


def compute_score(data_source: Any, solution_str: str, ground_truth: Any, extra_info: Mapping[str, Any] | None = None,
                  reward: Any = DEFAULT_REWARD, reward_options: Mapping[str, Any] | None = None,
                  unscored_value: float = 0.0, reward_router_address: str | None = None,
                  **_verl_kwargs: Any) -> dict[str, Any]:
    """Score one response with the registry reward named ``reward`` (verl's custom reward function).

    ``reward_options`` go to the reward's factory; ``reward_router_address`` to rewards that
    take it; other keyword arguments verl passes are accepted and ignored.
    """
    scorer = reward_for(reward, reward_options, reward_router_address)
    out = scorer([sample_from_verl(data_source, solution_str, ground_truth, extra_info)])[0]
    return result_dict(scorer, out, unscored_value)


async def compute_score_async(data_source: Any, solution_str: str, ground_truth: Any,
                              extra_info: Mapping[str, Any] | None = None, reward: Any = DEFAULT_REWARD,
                              reward_options: Mapping[str, Any] | None = None, unscored_value: float = 0.0,
                              reward_router_address: str | None = None, **_verl_kwargs: Any) -> dict[str, Any]:
    """``compute_score`` as a coroutine, for rewards that call a model or a service (the ORM):
    verl awaits it instead of running it in a thread
    (``reward.custom_reward_function.name=compute_score_async``)."""
    scorer = reward_for(reward, reward_options, reward_router_address)
    out = (await scorer.acall([sample_from_verl(data_source, solution_str, ground_truth, extra_info)]))[0]
    return result_dict(scorer, out, unscored_value)
