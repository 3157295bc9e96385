"""MathSETrainer on the taught tiny VLM (see conftest.py): which rows are judged, refined and trained.

Gold 3 rows are right at once, gold 7 rows wrong at once and right after reflection, gold 5 rows
wrong both times. rft and grpo's replace mode put a verified refinement in its failure's place,
under the original prompt; grpo's add mode (default) keeps the failure (see test_objective.py).
"""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from mathse_rl.types import Problem
from trl_parts import REFLECT_ANSWER, SOLVE_ANSWER, make_trainer, rows as _rows

pytestmark = pytest.mark.slow


def _trainer(path, tmp_path, loss: str, max_steps: int = 2, **kw):
    return make_trainer(path, tmp_path / loss, loss, max_steps=max_steps, **kw)


def _batch(trainer):
    rows = _rows()
    return [dict(r) for r in rows for _ in range(trainer.num_generations)]


def _decode(trainer, ids, mask):
    return [trainer.processing_class.decode(i[m.bool()], skip_special_tokens=True) for i, m in zip(ids, mask)]


def test_refined_rows_keep_the_original_prompt_and_rejected_rows_weigh_zero(taught_vlm, tmp_path):
    trainer = _trainer(taught_vlm, tmp_path, "rft")
    batch = _batch(trainer)
    trainer.model.train()
    out = trainer._generate_and_score_completions(batch)
    texts = _decode(trainer, out["completion_ids"], out["completion_mask"])
    keys = [r["id"] for r in batch]

    # The taught habits hold: gold-3 rows right at once; gold-7 rows were refined into 7; gold-5 rejected.
    assert all(t.strip() == SOLVE_ANSWER for t, k in zip(texts, keys) if k in ("three", "five"))
    assert all(t.strip() == REFLECT_ANSWER for t, k in zip(texts, keys) if k == "seven")
    assert out["mathse_refined"].tolist() == [k == "seven" for k in keys]
    assert out["mathse_weight"].tolist() == [0.0 if k == "five" else 1.0 for k in keys]

    # Refined rows carry the ids of the *original* solve prompt, not of the reflection prompt.
    from trl.data_utils import prepare_multimodal_messages

    original = [prepare_multimodal_messages(r["prompt"], images=r["images"]) for r in batch]
    original_ids, _, _ = trainer._tokenize_prompts(original)
    for i, k in enumerate(keys):
        row = out["prompt_ids"][i][out["prompt_mask"][i].bool()].tolist()
        assert row == list(original_ids[i])
    reflect_text = trainer.processing_class.decode(out["prompt_ids"][keys.index("seven")])
    assert "previous solution" not in reflect_text and "How many seven bars?" in reflect_text

    # The batch keeps its shape: one row per sampled completion.
    assert out["completion_ids"].shape[0] == len(batch) == out["advantages"].shape[0]
    metrics = trainer._metrics["train"]
    assert metrics["mathse/refine_verified"][-1] == 2.0 and metrics["mathse/refined"][-1] == 4.0
    assert metrics["mathse/refine_rate"][-1] == pytest.approx(4 / 6)
    assert metrics["mathse/accepted_frac"][-1] == pytest.approx(4 / 6)
    assert metrics["mathse/refine_seconds"][-1] > 0
    # trl's completions table gets what each refinement replaced (and the critique that guided it).
    extra = trainer._logs["extra"]
    wrong = list(extra["mathse_wrong_path"])[-len(batch):]
    assert [w.strip() for w, k in zip(wrong, keys) if k == "seven"] == [SOLVE_ANSWER] * 2
    assert all(w == "" for w, k in zip(wrong, keys) if k != "seven")

    # rft: what a rejected row says does not change the loss (zero weight, zero gradient).
    loss = trainer._compute_loss(trainer.model, out)
    scrambled = dict(out)
    ids = out["completion_ids"].clone()
    for i, k in enumerate(keys):
        if k == "five":
            ids[i] = torch.roll(ids[i], 1)
    scrambled["completion_ids"] = ids
    assert torch.allclose(loss, trainer._compute_loss(trainer.model, scrambled))
    assert loss.item() > 0 and loss.requires_grad


def test_grpo_replace_scores_refined_rows_inside_their_group(taught_vlm, tmp_path):
    trainer = _trainer(taught_vlm, tmp_path, "grpo", reflect_mode="replace")
    batch = _batch(trainer)
    trainer.model.train()
    out = trainer._generate_and_score_completions(batch)
    keys = [r["id"] for r in batch]
    # Every gold-7 row was refined and now earns the verifier's reward: its group is all-correct,
    # so its advantage is zero, and the reward log shows 1.0 for it; gold-5 rows stay at 0.
    rewards = list(trainer._logs["rewards"]["verifier"])[-len(batch):]
    assert [r for r, k in zip(rewards, keys) if k == "seven"] == [1.0, 1.0]
    assert [r for r, k in zip(rewards, keys) if k == "five"] == [0.0, 0.0]
    trainer.current_gradient_accumulation_steps = 1  # set by train(); the loss reads it
    assert torch.isfinite(trainer._compute_loss(trainer.model, out))


def test_reflection_off_leaves_failed_rows_alone(taught_vlm, tmp_path):
    trainer = _trainer(taught_vlm, tmp_path, "rft", reflect=False)
    batch = _batch(trainer)
    trainer.model.train()
    out = trainer._generate_and_score_completions(batch)
    keys = [r["id"] for r in batch]
    assert not out["mathse_refined"].any()
    assert out["mathse_weight"].tolist() == [1.0 if k == "three" else 0.0 for k in keys]


def test_refinements_per_group_can_be_capped(taught_vlm, tmp_path):
    trainer = _trainer(taught_vlm, tmp_path, "rft", max_refinements_per_group=1)
    batch = _batch(trainer)
    trainer.model.train()
    out = trainer._generate_and_score_completions(batch)
    keys = [r["id"] for r in batch]
    # One refinement per failed group: one gold-7 row is rescued, its twin stays rejected.
    assert sum(r for r, k in zip(out["mathse_refined"].tolist(), keys) if k == "seven") == 1
    assert trainer._metrics["train"]["mathse/refined"][-1] == 2.0


def test_evaluation_measures_the_policy_without_refinement(taught_vlm, tmp_path):
    trainer = _trainer(taught_vlm, tmp_path, "rft")  # reflection on
    batch = _batch(trainer)
    trainer.model.eval()
    out = trainer._generate_and_score_completions(batch)
    assert not out["mathse_refined"].any() and trainer._metrics["eval"]["mathse/refined"] == [0.0]


@pytest.mark.parametrize("loss,mode", [("rft", "add"), ("grpo", "add"), ("grpo", "replace")])
def test_trains_a_few_steps_with_each_loss(taught_vlm, tmp_path, loss, mode):
    trainer = _trainer(taught_vlm, tmp_path, loss, max_steps=2, reflect_mode=mode)
    trainer.train()
    assert trainer.state.global_step == 2
    logged = [h for h in trainer.state.log_history if "mathse/accepted_frac" in h]
    assert len(logged) == 2 and all(h["mathse/accepted_frac"] == pytest.approx(4 / 6) for h in logged)
    assert all(h["mathse/refine_verified"] == 2.0 for h in logged)
    assert trainer.mathse_seconds["refine"] > 0 and trainer.mathse_seconds["judge"] > 0


def test_config_rejects_an_unknown_loss(tmp_path):
    from mathse_rl.integrations.trl import MathSEConfig

    with pytest.raises(ValueError, match="loss must be one of"):
        MathSEConfig(output_dir=str(tmp_path), loss="dpo", use_cpu=True, bf16=False)
    with pytest.raises(ValueError, match="reflect_mode must be one of"):
        MathSEConfig(output_dir=str(tmp_path), reflect_mode="swap", use_cpu=True, bf16=False)


def test_the_private_trl_hooks_we_rely_on_keep_their_shape():
    """MathSETrainer overrides or calls these trl 1.16 internals; a trl upgrade that moves them fails here."""
    import inspect

    import trl
    from trl import GRPOTrainer

    assert trl.__version__.startswith("1.16.")
    expected = {
        "_generate_and_score_completions": ["self", "inputs"],
        "_generate": ["self", "prompts"],
        "_compute_loss": ["self", "model", "inputs"],
        "_tokenize_prompts": ["self", "prompts"],
        "_generate_single_turn": ["self", "prompt_ids", "images", "multimodal_fields", "num_generations",
                                  "has_tool_images"],
        "_prepare_inputs": ["self", "generation_batch"],
        "_get_per_token_logps_and_entropies": ["self", "model", "input_ids", "attention_mask", "logits_to_keep",
                                               "batch_size", "compute_entropy", "compute_aux_loss", "pixel_values",
                                               "image_grid_thw", "num_images", "pixel_attention_mask",
                                               "spatial_shapes", "num_tiles", "image_sizes", "token_type_ids",
                                               "mm_token_type_ids", "image_position_ids"],
    }
    for name, params in expected.items():
        fn = getattr(GRPOTrainer, name)
        if params is not None:
            assert list(inspect.signature(fn).parameters) == params, name
    # _generate returns 8 fields; we rewrite completion ids, tool mask, completions and logprobs (1..4).
    src = inspect.getsource(GRPOTrainer._generate)
    assert "return prompt_ids, completion_ids, tool_mask, completions, logprobs, extra_fields, images, tool_images" in src
    # A new generation batch is split into micro-batches stored in _buffered_inputs (token counts hook there).
    assert "self._buffered_inputs = [" in inspect.getsource(GRPOTrainer._prepare_inputs)


def test_online_dataset_rows_from_problems_with_image_paths(tmp_path):
    from mathse_rl.integrations.trl.trainer import online_dataset

    path = tmp_path / "bars.png"
    Image.new("RGB", (28, 28), (1, 2, 3)).save(path)
    ds = online_dataset([Problem("p", "How many bars?", "4", images=(str(path),))])
    row = ds[0]
    assert row["solution"] == "4" and row["question"] == "How many bars?" and row["id"] == "p"
    assert isinstance(row["images"][0], Image.Image) and row["prompt"][0]["content"][0]["type"] == "image"
