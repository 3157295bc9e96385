"""Registry rewards inside a real trl GRPOTrainer on the tiny VLM (CPU)."""

from __future__ import annotations

import asyncio
import math
import pickle

import pytest
from PIL import Image

from mathse_rl.integrations.trl import make_reward_func
from mathse_rl.integrations.trl.rewards import AsyncRewardFunc, RewardFunc, completion_text, prompt_text
from mathse_rl.rewards import Reward, get_reward, register_reward, unregister_reward
from mathse_rl.rewards.builtin import VerifierReward
from mathse_rl.types import RewardInput, RewardOutput

# Row i asks item i; rows without gold must be left out by the verifier (None), not scored.
# Every step sees all four rows (4 prompts x 2 generations), so trl's last table has both kinds.
GOLDS = ["7", None, "12", None]


def _rows():
    rows = []
    for i, gold in enumerate(GOLDS):
        colour = (220, 20, 20) if i % 2 else (20, 20, 220)
        rows.append({
            "image": Image.new("RGB", (56, 56), colour),
            "prompt": [{"role": "user", "content": [{"type": "image"},
                                                    {"type": "text", "text": f"How many dots? item {i}"}]}],
            "solution": gold,
        })
    return rows


def _train(tiny_vlm_path, tmp_path, names, steps):
    import torch
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    from mathse_rl.models.tiny import load_processor, load_tiny

    torch.set_num_threads(1)
    model, _ = load_tiny(tiny_vlm_path)
    args = GRPOConfig(
        output_dir=str(tmp_path), use_cpu=True, bf16=False, gradient_checkpointing=False, report_to="none",
        per_device_train_batch_size=8, num_generations=2, max_completion_length=16, max_steps=steps,
        logging_steps=1, save_strategy="no", learning_rate=1e-3, seed=0, log_completions=False,
    )
    funcs = [make_reward_func(n) for n in names]
    trainer = GRPOTrainer(model=model, reward_funcs=funcs, args=args, train_dataset=Dataset.from_list(_rows()),
                          processing_class=load_processor(tiny_vlm_path))
    trainer.train()
    return trainer


class AsyncVerifier(VerifierReward):
    """The verifier declared async (as a reward that calls a service would be); counts awaited calls."""

    is_async = True
    awaited = 0

    async def acall(self, samples):
        AsyncVerifier.awaited += 1
        return await super().acall(samples)


@pytest.fixture(scope="module")
def trained(tiny_vlm_path, tmp_path_factory):
    register_reward("async-verifier")(AsyncVerifier)
    try:
        return _train(tiny_vlm_path, tmp_path_factory.mktemp("grpo"),
                      ["verifier", "verifier+format", "async-verifier"], steps=2)
    finally:
        unregister_reward("async-verifier")


@pytest.mark.slow
def test_grpo_steps_complete_and_log_reward_by_name(trained):
    assert trained.state.global_step == 2
    logged = set().union(*trained.state.log_history)
    assert {"rewards/verifier/mean", "rewards/verifier+format/mean"} <= logged
    assert "verifier/unscored_frac" in logged
    # the async reward ran on trl's event loop, once per step, and scored like its sync twin
    assert AsyncVerifier.awaited == 2
    sync, awaited = list(trained._logs["rewards"]["verifier"]), list(trained._logs["rewards"]["async-verifier"])
    assert [math.isnan(x) for x in sync] == [math.isnan(x) for x in awaited]
    assert [x for x in sync if not math.isnan(x)] == [x for x in awaited if not math.isnan(x)]


@pytest.mark.slow
def test_logged_rewards_match_the_verifier_on_the_same_completions(trained):
    logs = trained._logs
    prompts, completions = list(logs["prompt"]), list(logs["completion"])
    scores = list(logs["rewards"]["verifier"])
    assert len(completions) == len(scores) > 0
    verifier = get_reward("verifier")
    for prompt, completion, score in zip(prompts, completions, scores):
        item = int(prompt_text(prompt).rsplit("item ", 1)[1])
        gold = GOLDS[item]
        if gold is None:
            assert math.isnan(score), "a sample without gold must be left out (None -> NaN), not scored"
        else:
            expected = verifier([RewardInput(question="", response=completion_text(completion), gold=gold)])[0].score
            assert expected in (0.0, 1.0) and score == expected
    # the extracted answer and the verdict reason reach trl's completions table, one per completion
    reasons = list(logs["extra"]["verifier/reason"])
    assert len(reasons) == len(completions) == 8
    assert reasons.count("no_gold") == 4 and None not in reasons


@pytest.mark.slow
def test_swapping_the_reward_is_changing_its_name(tiny_vlm_path, tmp_path):
    trainer = _train(tiny_vlm_path, tmp_path, ["format"], steps=1)
    logged = set().union(*trainer.state.log_history)
    assert "rewards/format/mean" in logged and "rewards/verifier/mean" not in logged
    assert "format/form" in trainer._logs["extra"]


# ---- the callable itself, without a trainer -------------------------------------------------

def test_plain_and_conversational_completions_and_gold_columns():
    f = make_reward_func("format")
    plain = f(prompts=["q"], completions=["The answer to this problem is 4."], answer=["4"])
    conv = f(prompts=[[{"role": "user", "content": "q"}]],
             completions=[[{"role": "assistant", "content": [{"type": "text", "text": "no statement"}]}]])
    assert plain == [1.0] and conv == [0.0]
    assert f.__name__ == "format"


class Seen(Reward):
    """Records what it is given (a throwaway reward)."""

    name = "seen"
    extras_keys = ("n_images",)
    last: list[RewardInput] = []

    def score(self, samples):
        Seen.last = list(samples)
        return [RewardOutput(None if s.gold is None else 1.0, {"n_images": len(s.images)}) for s in samples]


@pytest.fixture
def seen():
    register_reward("seen")(Seen)
    yield
    unregister_reward("seen")


def test_columns_reach_the_reward(seen):
    img = Image.new("RGB", (8, 8))
    extras, metrics = {}, {}
    f = make_reward_func("seen", gold_column="answer")
    out = f(prompts=[[{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Pick one"}]}]] * 2,
            completions=["A", "B"], answer=["B", None], solution=["ignored", "ignored"],
            choices=[["1", "2"], None], image=[img, None], trainer_state=object(),
            log_extra=lambda c, v: extras.__setitem__(c, v), log_metric=lambda n, v: metrics.__setitem__(n, v))
    assert out == [1.0, None]
    first, second = Seen.last
    assert first.question == "Pick one" and first.gold == "B" and first.choices == ("1", "2")
    assert first.images == (img,) and second.images == () and second.gold is None
    assert extras == {"seen/n_images": [1, 0]} and metrics == {"seen/unscored_frac": 0.5}


class SlowService(Reward):
    """Pretends to call a service (async)."""

    name = "slow-service"
    is_async = True
    extras_keys = ()

    def score(self, samples):
        return [RewardOutput(0.5) for _ in samples]


def test_async_reward_gives_an_async_callable_trl_recognises():
    from trl.trainer.utils import get_callable_name, is_async_callable

    register_reward("slow-service")(SlowService)
    try:
        f = make_reward_func("slow-service")
        assert isinstance(f, AsyncRewardFunc) and is_async_callable(f)
        assert get_callable_name(f) == "slow-service"
        assert asyncio.run(f(prompts=["q"], completions=["x"])) == [0.5]
        assert not is_async_callable(make_reward_func("format"))
    finally:
        unregister_reward("slow-service")


def test_callable_pickles_without_its_reward():
    f = make_reward_func("verifier+format")
    g = pickle.loads(pickle.dumps(f))
    assert isinstance(g, RewardFunc) and g.__name__ == "verifier+format" and g._reward is None
    assert g(prompts=["q"], completions=["The answer to this problem is 5."], solution=["5"]) == \
        f(prompts=["q"], completions=["The answer to this problem is 5."], solution=["5"])


def test_module_level_callables_for_trl_configs():
    import importlib

    pkg = importlib.import_module("mathse_rl.integrations.trl")
    assert pkg.verifier.__name__ == "verifier" and pkg.format_reward.__name__ == "format"
