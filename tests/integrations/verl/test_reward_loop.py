"""Registry rewards inside verl 0.9's real reward loop (RewardLoopManager, Ray workers, DataProto)."""

from __future__ import annotations

import asyncio
import os

import numpy as np
import pytest
import torch
from PIL import Image

from mathse_rl.rewards import Reward, register_reward, unregister_reward
from mathse_rl.types import RewardOutput

PROMPT_LEN, RESPONSE_LEN = 8, 24

# (response, gold, choices, verifier score or None when unscorable, format score)
CASES = [
    ("2 + 3 = 5. The answer to this problem is 5.", "5", None, 1.0, 1.0),
    ("The answer to this problem is 6.", "5", None, 0.0, 1.0),
    (r"So \boxed{12}", "12", None, 1.0, 1.0),
    ("The answer to this problem is 4.", "B", ["3", "4", "5"], 1.0, 1.0),
    ("The answer to this problem is 9.", "", None, None, 1.0),
    ("no idea", "7", None, 0.0, 0.0),
]


def compose_verl_config(overrides: list[str]):
    """verl's own ppo_trainer config with our overrides, migrated as main_ppo does."""
    import verl
    from hydra import compose, initialize_config_dir
    from verl.experimental.reward_loop.reward_loop import migrate_legacy_reward_impl

    config_dir = os.path.join(os.path.dirname(verl.__file__), "trainer", "config")
    with initialize_config_dir(config_dir=config_dir, version_base=None):
        cfg = compose(config_name="ppo_trainer", overrides=overrides)
    return migrate_legacy_reward_impl(cfg)


def make_batch(tokenizer, cases=CASES, images=None):
    """A hand-built rollout batch: left-padded prompts, right-padded responses of different lengths."""
    from verl import DataProto

    n = len(cases)
    prompts = torch.full((n, PROMPT_LEN), tokenizer.pad_token_id, dtype=torch.long)
    responses = torch.full((n, RESPONSE_LEN), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros(n, PROMPT_LEN + RESPONSE_LEN, dtype=torch.long)
    lengths = []
    for i, (response, *_rest) in enumerate(cases):
        p_ids = tokenizer("Solve it.", add_special_tokens=False)["input_ids"][:PROMPT_LEN]
        r_ids = tokenizer(response, add_special_tokens=False)["input_ids"][:RESPONSE_LEN - 1] + [tokenizer.eos_token_id]
        prompts[i, PROMPT_LEN - len(p_ids):] = torch.tensor(p_ids)
        mask[i, PROMPT_LEN - len(p_ids):PROMPT_LEN] = 1
        responses[i, :len(r_ids)] = torch.tensor(r_ids)
        mask[i, PROMPT_LEN:PROMPT_LEN + len(r_ids)] = 1
        lengths.append(len(r_ids))
    raw_prompts = np.empty(n, dtype=object)
    for i in range(n):
        raw_prompts[i] = [{"role": "user", "content": f"Question {i}"}]
    non_tensor = {
        "data_source": np.array(["unit"] * n, dtype=object),
        "reward_model": np.array([{"ground_truth": gold, "style": "rule"} for _, gold, *_ in cases], dtype=object),
        "extra_info": np.array([{"index": i, "choices": c} for i, (_, _, c, *_) in enumerate(cases)], dtype=object),
        "raw_prompt": raw_prompts,
    }
    if images is not None:
        mm = np.empty(n, dtype=object)
        for i in range(n):
            mm[i] = {"image": images[i]}
        non_tensor["multi_modal_data"] = mm
    batch = DataProto.from_dict(
        tensors={"prompts": prompts, "responses": responses, "attention_mask": mask,
                 "input_ids": torch.cat([prompts, responses], dim=1)},
        non_tensors=non_tensor,
    )
    return batch, lengths


@pytest.fixture(scope="module")
def tokenizer(tiny_lm_path):
    from mathse_rl.models.tiny import load_processor, tokenizer_of

    return tokenizer_of(load_processor(tiny_lm_path))


MANAGER_OVERRIDES = ["reward.reward_manager.name=mathse", "+reward.reward_kwargs.reward=verifier"]
CUSTOM_FN_OVERRIDES = ["reward.custom_reward_function.path=pkg://mathse_rl.integrations.verl",
                       "+reward.custom_reward_function.reward_kwargs.reward=verifier+format"]


def _kill_workers(ray, manager):
    """Kill the manager's named workers and wait until their names are free again."""
    import time

    for worker in manager.reward_loop_workers:
        ray.kill(worker)
    for i in range(len(manager.reward_loop_workers)):
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                ray.get_actor(f"reward_loop_worker_{i}")
            except ValueError:
                break
            time.sleep(0.1)


@pytest.fixture(scope="module")
def reward_loop_outputs(ray_local, tiny_lm_path, tokenizer):
    """Both configurations scored by real RewardLoopManagers, one after the other (worker names are global)."""
    from verl.experimental.reward_loop import RewardLoopManager

    base = [f"actor_rollout_ref.model.path={tiny_lm_path}", "reward.num_workers=1"]
    batch, lengths = make_batch(tokenizer)
    outs = {}
    for name, overrides in (("manager", MANAGER_OVERRIDES), ("custom_fn", CUSTOM_FN_OVERRIDES)):
        manager = RewardLoopManager(compose_verl_config(base + overrides))
        try:
            outs[name] = manager.compute_rm_score(batch)
        finally:
            _kill_workers(ray_local, manager)
    return outs, lengths


def _assert_on_last_token(out, lengths, expected):
    scores = out.batch["rm_scores"]
    assert scores.shape == (len(CASES), RESPONSE_LEN)
    for i, (length, want) in enumerate(zip(lengths, expected)):
        assert scores[i, length - 1].item() == pytest.approx(want), i
        others = torch.cat([scores[i, :length - 1], scores[i, length:]])
        assert torch.count_nonzero(others) == 0, i


@pytest.mark.slow
def test_mathse_reward_manager_scores_in_the_reward_loop(reward_loop_outputs):
    outs, lengths = reward_loop_outputs
    out = outs["manager"]
    expected = [0.0 if v is None else v for _, _, _, v, _ in CASES]
    _assert_on_last_token(out, lengths, expected)
    extras = out.non_tensor_batch
    assert set(out.meta_info["reward_extra_keys"]) == {"score", "acc", "scored", "pred", "reason"}
    assert list(extras["scored"]) == [v is not None for _, _, _, v, _ in CASES]
    assert extras["reason"][4] == "no_gold" and extras["pred"][0] == "5"


@pytest.mark.slow
def test_custom_reward_function_path_names_a_composite(reward_loop_outputs):
    outs, lengths = reward_loop_outputs
    out = outs["custom_fn"]
    # a part that cannot score makes the composite unscorable -> the declared fallback 0.0
    expected = [0.0 if v is None else v + f for _, _, _, v, f in CASES]
    _assert_on_last_token(out, lengths, expected)
    assert "format/form" in out.meta_info["reward_extra_keys"]


# ---- the manager in-process: images and question reach the reward --------------------------

class Seen(Reward):
    """Reports what it was given (a throwaway reward)."""

    name = "seen-verl"
    extras_keys = ("n_images", "question", "batch")

    def score(self, samples):
        return [RewardOutput(float(len(s.images)), {"n_images": len(s.images), "question": s.question,
                                                     "batch": len(samples)}) for s in samples]


def test_manager_passes_images_and_question_and_batches(tokenizer):
    from mathse_rl.integrations.verl.reward_manager import MathSERewardManager

    register_reward("seen-verl")(Seen)
    try:
        cfg = compose_verl_config(["reward.reward_manager.name=mathse", "+reward.reward_kwargs.reward=seen-verl"])
        manager = MathSERewardManager(cfg, tokenizer, None)
        images = [[Image.new("RGB", (8, 8))] * (i % 3) for i in range(len(CASES))]
        batch, _ = make_batch(tokenizer, images=images)

        async def score_all():
            return await asyncio.gather(*(manager.run_single(batch[i:i + 1]) for i in range(len(batch))))

        results = asyncio.run(score_all())
        assert [r["reward_extra_info"]["n_images"] for r in results] == [i % 3 for i in range(len(CASES))]
        assert [r["reward_extra_info"]["question"] for r in results] == [f"Question {i}" for i in range(len(CASES))]
        assert {r["reward_extra_info"]["batch"] for r in results} == {len(CASES)}  # one reward call for all
    finally:
        unregister_reward("seen-verl")


def test_images_from_raw_prompt_parts():
    from mathse_rl.integrations.verl.reward_manager import question_and_images

    img = Image.new("RGB", (4, 4))
    raw = [{"role": "system", "content": "Be careful."},
           {"role": "user", "content": [{"type": "image", "image": img}, {"type": "text", "text": "Area?"}]}]
    assert question_and_images({"raw_prompt": raw}) == ("Area?", (img,))


def test_compute_score_keys_are_the_same_for_every_sample():
    from mathse_rl.integrations.verl import compute_score

    results = [compute_score("unit", r, g, {"choices": c}, reward="verifier") for r, g, c, *_ in CASES]
    assert len({tuple(r) for r in results}) == 1
    assert [r["score"] for r in results] == [0.0 if v is None else v for *_, v, _ in CASES]
    assert [r["scored"] for r in results] == [v is not None for *_, v, _ in CASES]


def test_mathse_is_registered_by_the_verl_plugin():
    # `import verl` runs our verl.plugins entry point; the Ray test above shows it in worker processes
    import verl  # noqa: F401
    from verl.experimental.reward_loop.reward_manager import get_reward_manager_cls

    from mathse_rl.integrations.verl import plugin

    assert plugin.REGISTRATION_STATUS["mathse_rl.integrations.verl.reward_manager"] is None
    assert get_reward_manager_cls("mathse").__name__ == "MathSERewardManager"
