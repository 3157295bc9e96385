"""A problem set that mixes image and text-only questions trains: the SFT stage and the online trainer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from mathse_rl.evolve import load_config
from mathse_rl.evolve.components import solve_row
from mathse_rl.types import Problem


def _problems(tmp_path: Path) -> list[Problem]:
    img = tmp_path / "bars.png"
    Image.new("RGB", (56, 56), (200, 20, 20)).save(img)
    return [Problem(id="img", question="How many red bars?", gold="3", images=(str(img),)),
            Problem(id="txt", question="What is 2+2?", gold="4"),
            Problem(id="img2", question="How many bars?", gold="3", images=(str(img),)),
            Problem(id="txt2", question="What is 1+2?", gold="3")]


@pytest.mark.slow
def test_an_sft_stage_trains_on_image_and_text_only_rows_in_one_batch(tiny_vlm_path, tmp_path):
    from mathse_rl.integrations.trl.backends import SFTBackend

    rows = [solve_row(p, f"The answer to this problem is {p.gold}.", "sampled") for p in _problems(tmp_path)]
    cfg = load_config(model=tiny_vlm_path, output_dir=str(tmp_path / "run"), train={
        "use_cpu": True, "per_device_train_batch_size": 4, "gradient_accumulation_steps": 1, "max_steps": 1,
        "save_steps": 0, "learning_rate": 1e-3}, tracking={"report_to": ["none"], "progress": False})
    path = SFTBackend(cfg).train(rows, tiny_vlm_path, str(tmp_path / "m1"))
    assert json.loads((Path(path) / "mathse_train.json").read_text())["steps"] == 1


@pytest.mark.slow
def test_the_online_trainer_takes_a_mixed_problem_set(tiny_vlm_path, tmp_path):
    from mathse_rl.integrations.trl import MathSEConfig, MathSETrainer, make_reward_func
    from mathse_rl.integrations.trl.backends import load_policy
    from mathse_rl.integrations.trl.trainer import online_dataset

    ds = online_dataset(_problems(tmp_path))
    assert [len(i) for i in ds["images"]] == [1, 0, 1, 0]
    model, processor = load_policy(tiny_vlm_path)
    args = MathSEConfig(output_dir=str(tmp_path / "grpo"), use_cpu=True, bf16=False, report_to="none",
                        per_device_train_batch_size=4, num_generations=2, max_completion_length=6, max_steps=1,
                        save_strategy="no", shuffle_dataset=False, disable_tqdm=True, reflect=False, beta=0.0)
    trainer = MathSETrainer(model=model, reward_funcs=make_reward_func("verifier"), args=args, train_dataset=ds,
                            processing_class=processor)
    trainer.train()
    assert trainer.state.global_step == 1
