"""The plan as a check at start: ``mathse-rl evolve`` and the online recipe refuse what cannot fit.

    preflight_evolve(cfg)                        # raises PlanError (one line, with the numbers) or returns the plan
    preflight_online(args, model, env=os.environ)  # the same for a MathSEConfig under accelerate launch

The GPU's memory is what ``torch.cuda`` reports on this machine (``gpu_gb`` overrides it); on a machine
without a GPU, or for a CPU run, nothing is refused. ``launch.check_memory=false`` (evolve) or
``check_memory: false`` (online) turns the check off.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Mapping

from mathse_rl.evolve.config import ConfigError
from mathse_rl.plan.run import Assumptions, RunPlan, plan_evolve

logger = logging.getLogger(__name__)


class PlanError(ConfigError):
    """The run does not fit the GPUs it names (or a launch line does not parse); the message has the numbers."""


def gpu_gb() -> float | None:
    """Memory of this machine's first GPU in GB (None without one)."""
    try:
        import torch

        if torch.cuda.is_available():
            return torch.cuda.get_device_properties(0).total_memory / 1e9
    except Exception:  # no usable CUDA: nothing to check against
        return None
    return None


def _refuse(plan: RunPlan, what: str) -> None:
    if plan.problems:
        raise PlanError(f"{what} does not fit: " + "; ".join(plan.problems) +
                        " (mathse-rl plan <recipe> prints the whole table; check_memory=false skips this check)")


def preflight_evolve(cfg: Any, *, gpu: float | None = None) -> RunPlan | None:
    """Plan ``cfg`` and refuse it when a phase does not fit or a launch line does not parse."""
    if not getattr(cfg.launch, "check_memory", True) or cfg.train.use_cpu:
        return None
    gpu = gpu if gpu is not None else gpu_gb()
    if gpu is None:
        return None
    try:
        plan = plan_evolve(cfg, Assumptions(gpu_gb=gpu), recipe="the run")
    except FileNotFoundError as exc:  # no readable config for the model: nothing to plan with
        logger.warning("no memory plan: %s", exc)
        return None
    logger.info("memory plan:\n%s", plan.render())
    _refuse(plan, "the run")
    return plan


def accelerate_sharding(env: Mapping[str, str]) -> dict[str, Any]:
    """The sharding of the running ``accelerate launch`` job, from the variables it sets for its processes."""
    if env.get("ACCELERATE_USE_FSDP", "").lower() == "true":
        offload = env.get("FSDP_OFFLOAD_PARAMS", "false").lower() == "true"
        return {"sharding": "fsdp", "offload_optimizer": offload, "offload_params": offload,
                "state_dict_type": env.get("FSDP_STATE_DICT_TYPE", "FULL_STATE_DICT")}
    if env.get("ACCELERATE_USE_DEEPSPEED", "").lower() == "true" and env.get("ACCELERATE_DEEPSPEED_ZERO_STAGE") == "3":
        return {"sharding": "zero3",
                "offload_optimizer": env.get("ACCELERATE_DEEPSPEED_OFFLOAD_OPTIMIZER_DEVICE", "none") == "cpu",
                "offload_params": env.get("ACCELERATE_DEEPSPEED_OFFLOAD_PARAM_DEVICE", "none") == "cpu",
                "state_dict_type": "FULL_STATE_DICT"}
    return {"sharding": "ddp", "offload_optimizer": False, "offload_params": False,
            "state_dict_type": "FULL_STATE_DICT"}


def preflight_online(values: Mapping[str, Any], model: str, *, env: Mapping[str, str] | None = None,
                     gpu: float | None = None) -> RunPlan | None:
    """Plan the online recipe as it was launched (sharding and world size from accelerate's variables)."""
    from mathse_rl.plan.run import plan_online

    env = os.environ if env is None else env
    if not values.get("check_memory", True) or values.get("use_cpu"):
        return None
    gpu = gpu if gpu is not None else gpu_gb()
    if gpu is None:
        return None
    shard = accelerate_sharding(env)
    processes = int(env.get("WORLD_SIZE", "1"))
    plan = plan_online({**values, "model": model}, Assumptions(gpu_gb=gpu), sharding=shard, processes=processes)
    _refuse(plan, f"the online recipe under {shard['sharding']} on {processes} process(es)")
    return plan
