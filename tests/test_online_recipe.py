"""The online CPU recipe (``recipes/trl/mathse_grpo.py`` with ``mathse_grpo_tiny_cpu.yaml``) on a task it was
not tuned for (:mod:`mathse_rl.data.tiles`): its first steps keep held-out accuracy within a stated margin of
M0, and its held-out guard reports before and after."""

from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
RECIPE = ROOT / "recipes" / "trl" / "mathse_grpo_tiny_cpu.yaml"
SCRIPT = ROOT / "recipes" / "trl" / "mathse_grpo.py"
MARGIN = 0.10  # held-out accuracy (lenient and strict) may fall at most 10 points on 48 problems (5 of them)
HELDOUT = 48


@pytest.fixture(scope="module")
def tiles_m0(tmp_path_factory):
    """An M0 on the tiles task: a tiny VLM distilled on 64 teacher solutions (measured: 33% held-out, every
    right answer stated)."""
    import torch

    from mathse_rl.data import tiles
    from mathse_rl.data.synthetic import write_problems
    from mathse_rl.evolve import get_trainer, load_config
    from mathse_rl.evolve.components import solve_row
    from mathse_rl.models.tiny import build_tiny

    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("tiles")
    base = build_tiny(out / "base", kind="vlm", size="XS", seed=0, extra_text=tiles.vocabulary_text(),
                      vocab_size=768, tag="tiles-v1")
    cfg = load_config(overrides=["train.max_steps=100", "train.per_device_train_batch_size=16",
                                 "train.gradient_accumulation_steps=1", "train.use_cpu=true", "train.learning_rate=3e-3",
                                 "train.weight_decay=0.0", "train.save_steps=0"])
    rows = [solve_row(p, tiles.teacher_solution(p), "distilled") for p in tiles.make_split("seed", 64)]
    m0 = get_trainer("sft", cfg).train(rows, base, str(out / "m0"))
    return {"m0": m0, "pool": write_problems(out / "pool.jsonl", tiles.make_split("pool", 64)),
            "heldout": write_problems(out / "heldout.jsonl", tiles.make_split("heldout", HELDOUT)), "out": out}


def run_recipe(*argv: str) -> None:
    saved = sys.argv
    sys.argv = [str(SCRIPT), *argv]
    try:
        runpy.run_path(str(SCRIPT), run_name="__main__")
    finally:
        sys.argv = saved


@pytest.mark.slow
def test_the_online_cpu_recipes_first_steps_keep_m0_on_an_unseen_task(tiles_m0):
    out = tiles_m0["out"] / "online"
    run_recipe("--config", str(RECIPE), "--model", tiles_m0["m0"], "--train_data", tiles_m0["pool"],
               "--heldout_data", tiles_m0["heldout"], "--output_dir", str(out), "--threads", "1",
               "--max_completion_length", "96")
    guard = json.loads((out / "heldout_guard.json").read_text())
    before, after = guard["before"], guard["after"]
    assert before["strict_accuracy"] >= 0.2, before  # an M0 with something to lose, stating its answers
    assert after["accuracy"] >= before["accuracy"] - MARGIN, (before, after)
    assert after["strict_accuracy"] >= before["strict_accuracy"] - MARGIN, (before, after)
    assert guard["delivered"] == "final" and not guard["warnings"]
    assert guard["steps"] == guard["max_steps"] > 0 and (out / "final" / "config.json").exists()


def test_the_guard_warns_when_the_policy_stops_stating_its_answer():
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        from mathse_grpo import guard_verdict
    finally:
        sys.path.remove(str(SCRIPT.parent))
    held = {"accuracy": 0.30, "strict_accuracy": 0.30}
    assert guard_verdict(held, {"accuracy": 0.29, "strict_accuracy": 0.28}, 0.05) == ("final", [])
    delivered, [warning] = guard_verdict(held, {"accuracy": 0.31, "strict_accuracy": 0.10}, 0.05)
    assert delivered == "final" and "stops stating its answer" in warning
    delivered, [warning] = guard_verdict(held, {"accuracy": 0.10, "strict_accuracy": 0.02}, 0.05)
    assert delivered == "initial" and "fell 30.0% -> 10.0%" in warning
