"""The self-evolving loop: rounds of generate → judge → accept → (reflect → re-judge) → train.

    >>> from mathse_rl.evolve import EvolveConfig, load_config, run_evolve
    >>> load_config(overrides=["rounds=3"]).rounds
    3

The loop is framework-neutral; the trl backends (generation with transformers, trl's
``SFTTrainer``) are picked by name and imported only when used.
"""

from mathse_rl.evolve.components import (
    Critic, Generator, Judge, PathVerdict, PolicyRefiner, Refiner, Trainer, TrainRow, get_generator, get_refiner,
    get_trainer, list_components, register_generator, register_refiner, register_trainer,
)
from mathse_rl.evolve.config import EvolveConfig, load_config
from mathse_rl.evolve.evaluate import evaluate, pass_at_k
from mathse_rl.evolve.loop import EvolveResult, run_evolve
from mathse_rl.evolve.pool import Pool, StageLog

__all__ = [
    "Critic", "EvolveConfig", "EvolveResult", "Generator", "Judge", "PathVerdict", "PolicyRefiner", "Pool",
    "Refiner", "StageLog", "TrainRow", "Trainer", "evaluate", "get_generator", "get_refiner", "get_trainer",
    "list_components", "load_config", "pass_at_k", "register_generator", "register_refiner", "register_trainer",
    "run_evolve",
]
