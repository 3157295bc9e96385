"""The outcome reward model (ORM): a diagnostic judge of reasoning paths.

Given a question (and image), a solution and the reference answer, a judge returns a
:class:`~mathse_rl.types.Judgment`: CORRECT/WRONG, the first wrong step (an index into
the deterministically segmented solution), an error analysis and a suggestion.

    from mathse_rl.orm import load_judge
    judge = load_judge({"backend": "local", "model": "path/to/judge"})      # or "openai", "verifier"
    judgments = judge.judge(items)   # items: Sequence[RewardInput]; batched; None where nothing could decide

Backends are chosen by name (:func:`register_backend`, :func:`list_backends`). Failures and
unparsable replies fall back to the rule verifier (or None), and are counted in
``judge.counters`` / ``judge.metrics()``. Training and evaluation: :func:`build_orm_dataset`,
:func:`train_orm`, :func:`evaluate_judge` (imported lazily; they need trl only when training).
"""

from __future__ import annotations

from typing import Any

from mathse_rl.orm.config import FALLBACKS, JudgeConfig, judge_config
from mathse_rl.orm.judge import (
    Judge,
    JudgeCounters,
    JudgeResult,
    Reply,
    get_backend,
    list_backends,
    load_judge,
    register_backend,
)
from mathse_rl.orm.parse import ParseResult, parse_judgment, parse_judgment_report
from mathse_rl.orm.prompts import STATUS_PREFIX, build_judge_messages, build_judge_prompt, render_judgment
from mathse_rl.orm.steps import number_steps, segment_steps
from mathse_rl.types import Judgment

# Data/train/eval helpers are loaded on first access: they pull in datasets/trl/torch.
_LAZY = {
    "build_orm_dataset": "mathse_rl.orm.data",
    "OrmDataset": "mathse_rl.orm.data",
    "save_orm_dataset": "mathse_rl.orm.data",
    "load_orm_split": "mathse_rl.orm.data",
    "OrmTrainConfig": "mathse_rl.orm.train",
    "train_orm": "mathse_rl.orm.train",
    "evaluate_judge": "mathse_rl.orm.evaluate",
    "format_table": "mathse_rl.orm.evaluate",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'mathse_rl.orm' has no attribute {name!r}")


__all__ = [
    "FALLBACKS", "Judge", "JudgeConfig", "JudgeCounters", "JudgeResult", "Judgment", "ParseResult", "Reply",
    "STATUS_PREFIX", "build_judge_messages", "build_judge_prompt", "get_backend", "judge_config",
    "list_backends", "load_judge", "number_steps", "parse_judgment", "parse_judgment_report",
    "register_backend", "render_judgment", "segment_steps", *_LAZY,
]
