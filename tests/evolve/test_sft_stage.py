"""SFT stages on trl's machinery: warm-up on short stages, in-stage checkpoints and resume,
and the same stage run as a 2-process job (gloo on CPU) through the launcher a GPU user runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from scripted_parts import make_problems

from mathse_rl.evolve import load_config
from mathse_rl.evolve.components import solve_row

ANSWER = "Step 1: add. The answer to this problem is {}."


def sft_rows(tmp: Path, n: int):
    """``n`` solve rows of the scripted addition problems, their images saved as files."""
    import dataclasses

    rows = []
    for p in make_problems(n):
        img = tmp / f"{p.id}.png"
        p.images[0].save(img)
        rows.append(solve_row(dataclasses.replace(p, images=(str(img),)), ANSWER.format(p.gold), "sampled"))
    return rows


def sft_config(model: str, out: Path, **train):
    base = {"use_cpu": True, "learning_rate": 1e-3, "per_device_train_batch_size": 2,
            "gradient_accumulation_steps": 1, "max_steps": -1, "save_steps": 0, "seed": 0}
    return load_config(model=model, output_dir=str(out), train={**base, **train},
                       tracking={"report_to": ["none"], "progress": False})


def weights(path: str | Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    out = {}
    for f in sorted(Path(path).glob("*.safetensors")):
        out.update(load_file(f))
    return out


@pytest.mark.parametrize("train", [
    {"max_steps": 1},  # a one-step stage
    # the 7B recipe's global batch of 128 (4 x 32 on one process): 8 pool rows are one step
    {"per_device_train_batch_size": 4, "gradient_accumulation_steps": 32, "global_batch_size": 128},
], ids=["one-step", "global-batch-128"])
def test_a_one_step_stage_changes_the_weights(tiny_vlm_path, tmp_path, train):
    from mathse_rl.integrations.trl.backends import SFTBackend

    cfg = sft_config(tiny_vlm_path, tmp_path, warmup_ratio=0.1, **train)
    path = SFTBackend(cfg).train(sft_rows(tmp_path, 8), tiny_vlm_path, str(tmp_path / "m1"))
    info = json.loads((Path(path) / "mathse_train.json").read_text())
    assert info["steps"] == 1
    before, after = weights(tiny_vlm_path), weights(path)
    changed = sum(not torch.equal(before[k], after[k]) for k in before)
    assert changed > len(before) // 2, f"only {changed} of {len(before)} tensors moved"
