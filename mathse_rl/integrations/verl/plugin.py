"""verl plugin entry point (group ``verl.plugins``), loaded by ``import verl`` in every process.

It registers mathse-rl's names in verl's registries. verl imports this module inside
its own import, so a failure here must never break verl: each registration is guarded
and a failure is logged with its reason.
"""

from __future__ import annotations

import importlib
import logging
import os

logger = logging.getLogger(__name__)

# Modules whose import performs a registration in one of verl's registries.
REGISTRATIONS: tuple[str, ...] = (
    "mathse_rl.integrations.verl.reward_manager",  # reward manager "mathse"
    "mathse_rl.integrations.verl.algos",           # advantage estimator + policy loss "mathse_rft"
    "mathse_rl.integrations.verl.agent_loop",      # agent loop "mathse_reflect"
    "mathse_rl.integrations.verl.trainer",         # trainer "mathse" (trainer.v1.trainer_mode)
)


# Compatibility fixes applied before the registrations: (name, "module:function").
COMPAT_FIXES: tuple[tuple[str, str], ...] = (
    # trl 1.16 lacks the value-head class verl's FSDP path imports (see compat.py).
    ("trl_value_head", "mathse_rl.integrations.verl.compat:install_trl_shim"),
    # verl's Qwen2-VL forward fails on a micro-batch without images under transformers 5 (compat.py).
    ("text_only_vision", "mathse_rl.integrations.verl.compat:install_text_only_vision_fix"),
    # Not a fix: a mis-wired MathSE config fails in verl's validate_config, before ray.init (wiring.py).
    ("start_check", "mathse_rl.integrations.verl.wiring:install_start_check"),
)


def apply_compat_fixes() -> dict[str, str | None]:
    """Run every compatibility fix; return {name: None or the error text}."""
    results: dict[str, str | None] = {}
    for name, target in COMPAT_FIXES:
        module_name, func_name = target.split(":")
        try:
            getattr(importlib.import_module(module_name), func_name)()
            results[name] = None
        except Exception as exc:  # never let a plugin failure break `import verl`
            results[name] = f"{type(exc).__name__}: {exc}"
            logger.warning("mathse-rl: compatibility fix %s failed: %s", name, results[name])
    return results


def register_all() -> dict[str, str | None]:
    """Import every registration module; return {module: None or the error text}."""
    results: dict[str, str | None] = {}
    for name in REGISTRATIONS:
        try:
            importlib.import_module(name)
            results[name] = None
        except Exception as exc:  # never let a plugin failure break `import verl`
            results[name] = f"{type(exc).__name__}: {exc}"
            logger.warning("mathse-rl: could not register %s with verl: %s", name, results[name])
    return results


def enable_opt_in_backends() -> dict[str, str | None]:
    """Backends a user switches on explicitly; never active on a default (GPU) run.

    ``VERL_PLATFORM=cpu`` (verl's own platform switch) enables the CPU backend
    (``mathse_rl.integrations.verl.cpu``: platform, engines, ``hf_cpu`` rollout).
    """
    results: dict[str, str | None] = {}
    if os.environ.get("VERL_PLATFORM", "").strip().lower() == "cpu":
        try:
            importlib.import_module("mathse_rl.integrations.verl.cpu").enable()
            results["cpu"] = None
        except Exception as exc:  # never let a plugin failure break `import verl`
            results["cpu"] = f"{type(exc).__name__}: {exc}"
            logger.error("mathse-rl: could not enable the CPU backend: %s", results["cpu"])
    return results


COMPAT_STATUS = apply_compat_fixes()
BACKEND_STATUS = enable_opt_in_backends()
REGISTRATION_STATUS = register_all()
