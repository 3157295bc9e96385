"""LoRA instead of a full fine-tune: the offline SFT stage (merged at save) and the online trainer (peft)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mathse_rl.evolve import load_config


def _weights(path):
    from safetensors.torch import load_file

    out = {}
    for f in sorted(Path(path).glob("*.safetensors")):
        out.update(load_file(f))
    return out


@pytest.mark.slow
def test_an_sft_stage_with_lora_trains_adapters_and_saves_a_merged_model(tiny_vlm_path, tmp_path):
    from mathse_rl.evolve.components import solve_row
    from mathse_rl.integrations.trl.backends import SFTBackend, load_policy
    from mathse_rl.types import Problem

    rows = [solve_row(Problem(id=f"q{i}", question=f"What is {i}+1?", gold=str(i + 1)),
                      f"The answer to this problem is {i + 1}.", "sampled") for i in range(4)]
    cfg = load_config(model=tiny_vlm_path, output_dir=str(tmp_path / "run"), train={
        "use_cpu": True, "per_device_train_batch_size": 4, "gradient_accumulation_steps": 1, "max_steps": 2,
        "save_steps": 0, "learning_rate": 1e-2, "lora": {"r": 4, "lora_alpha": 8, "lora_dropout": 0.0}},
        tracking={"report_to": ["none"], "progress": False})
    path = SFTBackend(cfg).train(rows, tiny_vlm_path, str(tmp_path / "m1"))
    assert json.loads((Path(path) / "mathse_train.json").read_text())["steps"] == 2
    assert not (Path(path) / "adapter_config.json").exists()  # a whole model vLLM and the next stage can read
    before, after = _weights(tiny_vlm_path), _weights(path)
    assert before.keys() == after.keys()
    moved = {k for k in before if not torch.equal(before[k], after[k])}
    # only the language model's linear layers (the hub layout saves them as model.layers.*), never the vision tower
    assert moved and all(not k.startswith("visual") and k.rsplit(".", 2)[-2].endswith("proj") for k in moved), moved
    load_policy(path)  # loads back with its processor


def test_lora_under_a_sharded_launch_is_refused(tiny_vlm_path, tmp_path, monkeypatch):
    from mathse_rl.integrations.trl.backends import SFTBackend

    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    cfg = load_config(model=tiny_vlm_path, output_dir=str(tmp_path / "run"), train={"use_cpu": True, "lora": {"r": 4}})
    with pytest.raises(ValueError, match="train.lora runs unsharded"):
        SFTBackend(cfg).train([], tiny_vlm_path, str(tmp_path / "m1"))


@pytest.mark.slow
def test_the_online_trainer_takes_a_lora_option(tiny_vlm_path, tmp_path):
    from datasets import Dataset

    from mathse_rl.integrations.trl import MathSEConfig, MathSETrainer, make_reward_func
    from mathse_rl.integrations.trl.backends import load_policy

    model, processor = load_policy(tiny_vlm_path)
    rows = [{"prompt": [{"role": "user", "content": f"What is {i}+1?"}], "solution": str(i + 1)} for i in range(2)]
    args = MathSEConfig(output_dir=str(tmp_path / "grpo"), use_cpu=True, bf16=False, report_to="none",
                        per_device_train_batch_size=4, num_generations=2, max_completion_length=6, max_steps=1,
                        save_strategy="no", disable_tqdm=True, reflect=False, beta=0.0,
                        lora={"r": 4, "lora_alpha": 8, "lora_dropout": 0.0})
    trainer = MathSETrainer(model=model, reward_funcs=make_reward_func("verifier"), args=args,
                            train_dataset=Dataset.from_list(rows), processing_class=processor)
    trainable = [n for n, p in trainer.model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable) and not any("visual" in n for n in trainable)
    trainer.train()
    assert trainer.state.global_step == 1
