"""MathSETrainer on the tiny VLM: refined rows replace failed ones under the original prompt.

A tiny VLM is first taught two habits with trl's SFTTrainer: to the solve prompt it answers 3,
to the reflection prompt it answers 7. A batch then holds three kinds of questions:
gold 3 (right at once), gold 7 (wrong at once, right after reflection) and gold 5 (wrong
both times, rejected). That makes every branch of the trainer happen on purpose.
"""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from mathse_rl.evolve.components import Critic
from mathse_rl.prompts import build_reflect_messages
from mathse_rl.types import Problem

pytestmark = pytest.mark.slow

GOLDS = {"three": "3", "seven": "7", "five": "5"}
SOLVE_ANSWER = "The answer to this problem is 3."
REFLECT_ANSWER = "The answer to this problem is 7."


def _problem(key: str) -> Problem:
    colour = {"three": (200, 20, 20), "seven": (20, 200, 20), "five": (20, 20, 200)}[key]
    return Problem(id=key, question=f"How many {key} bars?", gold=GOLDS[key],
                   images=(Image.new("RGB", (56, 56), colour),))


def _prompt(p: Problem) -> list[dict]:
    # A short solve prompt keeps the tiny model's sequences short on CPU.
    return [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": p.question}]}]


def _rows() -> list[dict]:
    return [{"id": k, "prompt": _prompt(_problem(k)), "images": list(_problem(k).images),
             "solution": GOLDS[k], "question": _problem(k).question} for k in GOLDS]


@pytest.fixture(scope="module")
def taught_vlm(tiny_vlm_path, tmp_path_factory):
    """The tiny VLM after 40 SFT steps: solve prompt -> 3, reflection prompt -> 7."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from mathse_rl.integrations.trl.backends import load_policy, save_policy

    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the CPU is shared; one thread is faster than two contending
    model, processor = load_policy(tiny_vlm_path)
    critic = Critic({"backend": "verifier"})
    rows = []
    for key in GOLDS:
        p = _problem(key)
        rows.append({"images": list(p.images), "prompt": _prompt(p),
                     "completion": [{"role": "assistant", "content": SOLVE_ANSWER}]})
        if key != "three":  # reflection only ever sees wrong paths
            crit = critic.critique([p], [SOLVE_ANSWER])[0]
            rows.append({"images": list(p.images), "prompt": build_reflect_messages(p, SOLVE_ANSWER, crit, "short"),
                         "completion": [{"role": "assistant", "content": REFLECT_ANSWER}]})
    out = tmp_path_factory.mktemp("taught")
    args = SFTConfig(output_dir=str(out / "work"), use_cpu=True, bf16=False, gradient_checkpointing=False,
                     report_to="none", per_device_train_batch_size=5, max_steps=40, learning_rate=1e-2,
                     lr_scheduler_type="constant", save_strategy="no", max_length=None, logging_steps=10,
                     seed=0, disable_tqdm=True)
    trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=processor)
    trainer.train()
    torch.set_num_threads(threads)
    return save_policy(trainer.model, processor, out / "model")


def _trainer(path, tmp_path, loss: str, max_steps: int = 2, **kw):
    from datasets import Dataset

    from mathse_rl.integrations.trl import MathSEConfig, MathSETrainer, make_reward_func
    from mathse_rl.integrations.trl.backends import load_policy

    model, processor = load_policy(path)
    args = MathSEConfig(
        output_dir=str(tmp_path / loss), use_cpu=True, bf16=False, gradient_checkpointing=False, report_to="none",
        per_device_train_batch_size=6, num_generations=2, max_completion_length=12, max_steps=max_steps,
        temperature=0.05, logging_steps=1, save_strategy="no", learning_rate=1e-4, seed=0, beta=0.0,
        loss=loss, reflect_template="short", **kw)
    return MathSETrainer(model=model, reward_funcs=make_reward_func("verifier"), args=args,
                         train_dataset=Dataset.from_list(_rows()), processing_class=processor)


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
    assert metrics["mathse/refinement_verified"][-1] == 2.0 and metrics["mathse/refined"][-1] == 4.0
    assert metrics["mathse/reflection_success_rate"][-1] == 0.5
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


def test_grpo_loss_scores_refined_rows_inside_their_group(taught_vlm, tmp_path):
    trainer = _trainer(taught_vlm, tmp_path, "grpo")
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


@pytest.mark.parametrize("loss", ["rft", "grpo"])
def test_trains_a_few_steps_with_each_loss(taught_vlm, tmp_path, loss):
    trainer = _trainer(taught_vlm, tmp_path, loss, max_steps=2)
    trainer.train()
    assert trainer.state.global_step == 2
    logged = [h for h in trainer.state.log_history if "mathse/accept_rate" in h]
    assert len(logged) == 2 and all(h["mathse/accept_rate"] == pytest.approx(4 / 6) for h in logged)
    assert all(h["mathse/refinement_verified"] == 2.0 for h in logged)
    assert trainer.mathse_seconds["refine"] > 0 and trainer.mathse_seconds["judge"] > 0


def test_config_rejects_an_unknown_loss(tmp_path):
    from mathse_rl.integrations.trl import MathSEConfig

    with pytest.raises(ValueError, match="loss must be one of"):
        MathSEConfig(output_dir=str(tmp_path), loss="dpo", use_cpu=True, bf16=False)


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
        "_get_per_token_logps_and_entropies": None,
    }
    for name, params in expected.items():
        fn = getattr(GRPOTrainer, name)
        if params is not None:
            assert list(inspect.signature(fn).parameters) == params, name
    # _generate returns 8 fields; we rewrite completion ids, tool mask, completions and logprobs (1..4).
    src = inspect.getsource(GRPOTrainer._generate)
    assert "return prompt_ids, completion_ids, tool_mask, completions, logprobs, extra_fields, images, tool_images" in src


def test_online_dataset_rows_from_problems_with_image_paths(tmp_path):
    from mathse_rl.integrations.trl.trainer import online_dataset

    path = tmp_path / "bars.png"
    Image.new("RGB", (28, 28), (1, 2, 3)).save(path)
    ds = online_dataset([Problem("p", "How many bars?", "4", images=(str(path),))])
    row = ds[0]
    assert row["solution"] == "4" and row["question"] == "How many bars?" and row["id"] == "p"
    assert isinstance(row["images"][0], Image.Image) and row["prompt"][0]["content"][0]["type"] == "image"
