"""What a run needs per GPU and per node, before it starts (``mathse-rl plan <recipe>``).

From the model's real config (built on the meta device, :mod:`~mathse_rl.plan.shapes`), the recipe's
sharding, precision, optimizer, vLLM share and parallel sizes, and a judge on the same GPUs:
per-GPU memory in each phase (:mod:`~mathse_rl.plan.memory`), checkpoint and disk sizes, and every launch
line as each node's shell expands it (:mod:`~mathse_rl.plan.commands`). ``mathse-rl evolve`` and the
online recipe run the same check at start and refuse what cannot fit (:func:`preflight`).
"""

from mathse_rl.plan.run import Assumptions, RunPlan, plan_evolve, plan_online, plan_recipe
from mathse_rl.plan.check import PlanError, preflight_evolve, preflight_online

__all__ = ["Assumptions", "PlanError", "RunPlan", "plan_evolve", "plan_online", "plan_recipe", "preflight_evolve",
           "preflight_online"]
