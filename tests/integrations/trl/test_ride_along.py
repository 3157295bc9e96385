"""grpo add mode: a micro-batch's verified refinements ride along in its forward pass, one extra row each.

Before, the whole micro-batch rode along twice (2 x rows in one forward) as soon as one row had a
refinement; now only the rows that have one are added, with their own images, and the SFT term on them is
the same as scoring every row twice would give.
"""

from __future__ import annotations

import pytest
import torch

from trl_parts import make_trainer, rows

pytestmark = pytest.mark.slow


def test_only_refined_rows_ride_along_and_the_loss_is_unchanged(taught_vlm, tmp_path, monkeypatch):
    from trl import GRPOTrainer

    from mathse_rl.integrations.trl import trainer as module

    trainer = make_trainer(taught_vlm, tmp_path, "grpo", keys=("three", "seven", "three"),
                           per_device_train_batch_size=6)
    batch = [dict(r) for r in rows(("three", "seven", "three")) for _ in range(2)]
    trainer.model.train()
    out = trainer._generate_and_score_completions(batch)
    assert out["mathse_refined"].tolist() == [False, False, True, True, False, False]
    trainer._set_token_counts([out], world=True)
    trainer.current_gradient_accumulation_steps = 1  # set by train(); the loss reads it
    forwards: list[int] = []
    real = GRPOTrainer._get_per_token_logps_and_entropies

    def counted(self, model, input_ids, *a, **k):
        forwards.append(input_ids.size(0))
        return real(self, model, input_ids, *a, **k)

    monkeypatch.setattr(GRPOTrainer, "_get_per_token_logps_and_entropies", counted)
    torch.manual_seed(0)
    loss = trainer._compute_loss(trainer.model, out)
    assert forwards == [6 + 2]  # one forward: the 6 rows and the 2 refinements (was 12)
    # The same loss when every row rides along (the layout fallback): rows without a refinement add nothing.
    rows_of = module._rows_of
    monkeypatch.setattr(module, "_rows_of", lambda named, sel, total, whole=False:
                        rows_of(named, sel, total, whole=True) if whole else None)
    torch.manual_seed(0)
    doubled = trainer._compute_loss(trainer.model, out)
    assert forwards[-1] == 12
    assert loss.item() == pytest.approx(doubled.item(), rel=1e-5, abs=1e-6)


def test_reflection_prompts_are_checked_against_the_vllm_servers_length_without_setting_it(taught_vlm, tmp_path):
    """vLLM server mode with ``vllm_max_model_length`` unset: the limit is the one the server reports
    (``/server_info``, as trl itself reads the server's config), so a reflection prompt longer than the
    server takes is counted as too long instead of failing the server's whole generate call."""
    from types import SimpleNamespace

    trainer = make_trainer(taught_vlm, tmp_path, "grpo")
    asked = []

    class Client:  # trl's VLLMClient.get_server_info: the server's VllmConfig as JSON
        def get_server_info(self):
            asked.append(1)
            return {"model_config": {"max_model_len": 96}}

    trainer.use_vllm, trainer.args.vllm_mode = True, "server"
    trainer.vllm_generation = SimpleNamespace(vllm_client=Client())
    budget = trainer._reflect_budget()
    assert budget.context_limit == 96 and budget.count_tokens is not None
    trainer._reflect_budget()
    assert asked == [1]  # read once
