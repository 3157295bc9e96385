"""Rewards by name: a registry of framework-neutral rewards and the built-ins.

    >>> from mathse_rl.rewards import get_reward
    >>> from mathse_rl.types import RewardInput
    >>> reward = get_reward("format")
    >>> [o.score for o in reward([RewardInput(question="?", response="The answer to this problem is 4.", gold="4")])]
    [1.0]

Built-in names: ``verifier``, ``format``; ``orm``, ``orm_gated`` and its alias
``verifier+orm`` when :mod:`mathse_rl.orm.reward` is importable; composites ``"a+b"`` / ``{"a": 0.9, "b": 0.1}``; third-party names from the
entry-point group ``mathse_rl.rewards``.
"""

from mathse_rl.rewards.base import Reward
from mathse_rl.rewards.registry import (
    ENTRY_POINT_GROUP,
    get_reward,
    list_rewards,
    register_reward,
    unavailable_rewards,
    unregister_reward,
)
from mathse_rl.rewards import builtin as _builtin  # noqa: F401  (registers verifier, format)
from mathse_rl.rewards.composite import WeightedReward

# The ORM's rewards live with the ORM; they are listed only once that module imports.
register_reward("orm", "mathse_rl.orm.reward:ORMReward")
register_reward("orm_gated", "mathse_rl.orm.reward:GatedORMReward")
# "verifier+orm" names the gated reward (verifier first, the judge where it accepts), not a sum.
register_reward("verifier+orm", "mathse_rl.orm.reward:GatedORMReward")

__all__ = [
    "ENTRY_POINT_GROUP",
    "Reward",
    "WeightedReward",
    "get_reward",
    "list_rewards",
    "register_reward",
    "unavailable_rewards",
    "unregister_reward",
]
