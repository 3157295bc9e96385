"""verl integration: ``compute_score``, the ``mathse`` reward manager, the ``mathse_rft``
advantage estimator and policy loss, the ``mathse_reflect`` agent loop and an opt-in CPU backend.

``reward.custom_reward_function.path=pkg://mathse_rl.integrations.verl`` finds
``compute_score`` here; it is imported lazily so this package stays cheap to import.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY: dict[str, str] = {
    "compute_score": "mathse_rl.integrations.verl.scoring",
    "compute_score_async": "mathse_rl.integrations.verl.scoring",
    "check_reward_config": "mathse_rl.integrations.verl.scoring",
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_LAZY[name]), name)


__all__ = sorted(_LAZY)
