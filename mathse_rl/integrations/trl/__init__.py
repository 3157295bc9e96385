"""trl integration: reward callables, the online ``MathSETrainer`` and backends for the evolve loop.

Attributes are imported lazily so ``import mathse_rl.integrations.trl`` stays cheap and a
``trl grpo`` YAML can name a reward by dotted path, e.g. ``mathse_rl.integrations.trl.verifier``.
"""

from __future__ import annotations

import importlib
from typing import Any

# attribute -> module that defines it
_LAZY: dict[str, str] = {
    "make_reward_func": "mathse_rl.integrations.trl.rewards",
    "JudgeRewardFunc": "mathse_rl.integrations.trl.rewards",
    "bind_judge_rewards": "mathse_rl.integrations.trl.rewards",
    "verifier": "mathse_rl.integrations.trl.rewards",
    "format_reward": "mathse_rl.integrations.trl.rewards",
    "orm": "mathse_rl.integrations.trl.rewards",
    "verifier_orm": "mathse_rl.integrations.trl.rewards",
    "MathSETrainer": "mathse_rl.integrations.trl.trainer",
    "MathSEConfig": "mathse_rl.integrations.trl.trainer",
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_LAZY[name]), name)


__all__ = sorted(_LAZY)
