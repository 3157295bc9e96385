"""What MathSETrainer trains, measured on real trl with the tiny models.

rft: supervised learning on accepted paths, its scale fixed per optimizer step (not per micro-batch,
not per number of rejected rows). grpo: the policy's failure keeps its place and its advantage, a
verified refinement adds an SFT term, so a group made all-correct by reflection still teaches.
"""

from __future__ import annotations

import pytest
import torch

from trl_parts import STEP_ARGS, make_trainer, one_step_delta, rows

pytestmark = pytest.mark.slow


def _grads(model) -> torch.Tensor:
    return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])


def test_rft_update_is_the_same_with_gradient_accumulation(taught_vlm, tmp_path):
    """One optimizer step over 8 completions: one micro-batch of 8, or 4 accumulated micro-batches of 2."""
    keys = ("three", "seven", "five", "three")  # 8 rows: 4 correct, 2 refined and verified, 2 rejected
    whole = one_step_delta(make_trainer(taught_vlm, tmp_path / "ga1", "rft", keys=keys,
                                        per_device_train_batch_size=8, **STEP_ARGS))
    accumulated = one_step_delta(make_trainer(taught_vlm, tmp_path / "ga4", "rft", keys=keys,
                                              per_device_train_batch_size=2, gradient_accumulation_steps=4,
                                              **STEP_ARGS))
    assert whole.abs().max() > 0
    assert ((accumulated - whole).abs().max() / whole.abs().max()).item() < 1e-4


@pytest.mark.parametrize("rejected", [1, 9, 99])
def test_rft_gradient_of_an_accepted_row_ignores_rejected_rows(tiny_lm_path, tmp_path, rejected):
    """The loss's gradient with 1 accepted row beside 1, 9 or 99 rejected ones is that row's own gradient."""
    from datasets import Dataset

    from mathse_rl.integrations.trl import MathSEConfig, MathSETrainer, make_reward_func

    args = MathSEConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, report_to="none", loss="rft",
                        per_device_train_batch_size=2, num_generations=2, max_completion_length=8, beta=0.0)
    ds = Dataset.from_list([{"prompt": [{"role": "user", "content": "What is 2 + 3?"}], "solution": "5"}])
    trainer = MathSETrainer(model=tiny_lm_path, reward_funcs=make_reward_func("verifier"), args=args,
                            train_dataset=ds, processing_class=None)
    trainer.model.train()
    g = torch.Generator().manual_seed(0)
    n = 1 + rejected
    vocab = trainer.model.config.vocab_size
    batch = {"prompt_ids": torch.randint(3, vocab, (1, 6), generator=g).repeat(n, 1),
             "prompt_mask": torch.ones(n, 6, dtype=torch.long),
             "completion_ids": torch.randint(3, vocab, (n, 5), generator=g),
             "completion_mask": torch.ones(n, 5, dtype=torch.long),
             "mathse_weight": torch.tensor([1.0] + [0.0] * rejected)}
    batch["completion_ids"][0] = torch.arange(10, 15)  # the accepted row is the same in every case
    trainer._set_token_counts([batch], world=True)
    trainer.model.zero_grad()
    trainer._compute_loss(trainer.model, batch).backward()
    grads = _grads(trainer.model)

    alone = {k: v[:1] for k, v in batch.items() if k.startswith(("prompt", "completion", "mathse_weight"))}
    trainer._set_token_counts([alone], world=True)
    trainer.model.zero_grad()
    trainer._compute_loss(trainer.model, alone).backward()
    assert torch.allclose(grads, _grads(trainer.model), rtol=1e-4, atol=1e-7)


def _grad_norm_after_one_batch(trainer, keys) -> float:
    batch = [dict(r) for r in rows(keys) for _ in range(trainer.num_generations)]
    trainer.model.train()
    out = trainer._generate_and_score_completions(batch)
    trainer._set_token_counts([out], world=True)
    trainer.current_gradient_accumulation_steps = 1  # set by train(); the loss reads it
    trainer.model.zero_grad()
    trainer._compute_loss(trainer.model, out).backward()
    return _grads(trainer.model).norm().item()


def test_grpo_group_made_all_correct_by_reflection_still_teaches(taught_vlm, tmp_path):
    # Both "seven" rows fail and both refinements are verified: with replace, the group is all-correct,
    # every advantage is zero and nothing is learned; the default (add) trains the refinements.
    default = make_trainer(taught_vlm, tmp_path / "add", "grpo")
    assert _grad_norm_after_one_batch(default, ("seven",)) > 0
    replace = make_trainer(taught_vlm, tmp_path / "replace", "grpo", reflect_mode="replace")
    assert _grad_norm_after_one_batch(replace, ("seven",)) == 0.0


def test_grpo_add_keeps_the_failure_in_its_group(taught_vlm, tmp_path):
    trainer = make_trainer(taught_vlm, tmp_path, "grpo")  # reflect_mode="add" by default
    batch = [dict(r) for r in rows(("three", "seven")) for _ in range(2)]
    trainer.model.train()
    out = trainer._generate_and_score_completions(batch)
    texts = trainer.processing_class.batch_decode(out["completion_ids"], skip_special_tokens=True)
    # The policy's own (wrong) answers stay its completions and keep their reward 0.
    assert [t.strip() for t in texts] == ["The answer to this problem is 3."] * 4
    assert list(trainer._logs["rewards"]["verifier"])[-4:] == [1.0, 1.0, 0.0, 0.0]
    # The verified refinements are carried beside them, marked, for the SFT term.
    assert out["mathse_refined"].tolist() == [False, False, True, True]
    refinements = trainer.processing_class.batch_decode(out["mathse_refinement_ids"][2:], skip_special_tokens=True)
    assert [t.strip() for t in refinements] == ["The answer to this problem is 7."] * 2
    assert out["mathse_refinement_mask"][:2].sum() == 0


def test_reflection_generation_errors_are_counted_and_training_goes_on(taught_vlm, tmp_path):
    trainer = make_trainer(taught_vlm, tmp_path, "rft")
    generate = trainer._generate_single_turn

    def failing(prompt_ids, images, fields, num_generations, *a):
        if num_generations == 1:  # the reflection call (sampling uses num_generations=2)
            raise RuntimeError("engine went away")
        return generate(prompt_ids, images, fields, num_generations, *a)

    trainer._generate_single_turn = failing
    batch = [dict(r) for r in rows() for _ in range(2)]
    trainer.model.train()
    out = trainer._generate_and_score_completions(batch)
    assert not out["mathse_refined"].any()
    metrics = trainer._metrics["train"]
    assert metrics["mathse/reflect_errors"][-1] == 4.0 and metrics["mathse/refined"][-1] == 0.0
