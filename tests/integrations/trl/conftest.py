"""Fixtures of the MathSETrainer tests; their helpers live in ``trl_parts.py`` beside this file.

``taught_vlm``: a tiny VLM taught two habits (built once per test session): to the solve prompt it
answers 3, to the reflection prompt it answers 7. A batch then holds three kinds of questions:
gold 3 (right at once), gold 7 (wrong at once, right after reflection) and gold 5 (wrong both
times, rejected), so every branch of the trainer happens on purpose.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

from trl_parts import GOLDS, REFLECT_ANSWER, SOLVE_ANSWER, problem, solve_prompt  # noqa: E402


@pytest.fixture(scope="session")
def taught_vlm(tiny_vlm_path, tmp_path_factory):
    """The tiny VLM after 40 SFT steps: solve prompt -> 3, reflection prompt -> 7."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from mathse_rl.evolve.components import Critic
    from mathse_rl.prompts import build_reflect_messages
    from mathse_rl.integrations.trl.backends import load_policy, save_policy

    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the CPU is shared; one thread is faster than two contending
    model, processor = load_policy(tiny_vlm_path)
    critic = Critic({"backend": "verifier"})
    data = []
    for key in GOLDS:
        p = problem(key)
        data.append({"images": list(p.images), "prompt": solve_prompt(p),
                     "completion": [{"role": "assistant", "content": SOLVE_ANSWER}]})
        if key != "three":  # reflection only ever sees wrong paths
            crit = critic.critique([p], [SOLVE_ANSWER])[0]
            data.append({"images": list(p.images), "prompt": build_reflect_messages(p, SOLVE_ANSWER, crit, "short"),
                         "completion": [{"role": "assistant", "content": REFLECT_ANSWER}]})
    out = tmp_path_factory.mktemp("taught")
    args = SFTConfig(output_dir=str(out / "work"), use_cpu=True, bf16=False, gradient_checkpointing=False,
                     report_to="none", per_device_train_batch_size=5, max_steps=40, learning_rate=1e-2,
                     lr_scheduler_type="constant", save_strategy="no", max_length=None, logging_steps=10,
                     seed=0, disable_tqdm=True)
    trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(data), processing_class=processor)
    trainer.train()
    torch.set_num_threads(threads)
    return save_policy(trainer.model, processor, out / "model")
