"""One verdict per path in verl: the ``mathse_reflect`` loop's judge, the ``mathse`` reward manager,
``compute_score``, the ``mathse`` trainer's acceptance and DAPO's group filter read one judgment.

Each completion of the corpus (``tests/rewards/verdict_corpus.py``) is the answer of a real agent
loop (verl's class, its scripted rollout server stand-in); its output then goes to the reward
manager as verl's agent-loop worker hands it over (``tool_extra_fields``), to ``compute_score`` as
verl's ``naive`` manager does (``extra_info``), and to both again without the loop's verdict (they
judge it themselves). Also here: DAPO ``filter_groups`` with ``metric=acc`` through verl's own
replay buffer, a mismatched reward refused at start, and the ORM judge's HTTP client and fallback
inside the reward manager.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

import verl  # noqa: F401  (loads the mathse_rl plugin)
from verl.experimental.agent_loop.agent_loop import DictConfigWrap, _agent_loop_registry
from verl.utils.dataset.rl_dataset import RLHFDataset

from mathse_rl.prompts import Problem, build_solve_messages

sys.path.insert(0, str(Path(__file__).parents[2] / "rewards"))
from verdict_corpus import CORPUS, patch_timeouts  # noqa: E402

QUESTION = "How many bars are taller than 4?"


class PILImages(RLHFDataset):
    @classmethod
    def _process_multi_modal_info(cls, messages, image_patch_size, config):
        factor = image_patch_size * 2
        images = [part["image"].convert("RGB").resize((factor * 2, factor * 2))
                  for m in messages if isinstance(m["content"], list)
                  for part in m["content"] if part.get("type") == "image"]
        return images or None, None, None


def trainer_config(reward=None, **mathse):
    cfg = {"actor_rollout_ref": {"rollout": {"prompt_length": 256, "response_length": 48, "max_model_len": 1024,
                                             "name": "vllm"}},
           "data": {}, "mathse": {"reflect": {"enabled": False}, **mathse}}
    if reward is not None:
        cfg["reward"] = reward
    return OmegaConf.create(cfg)


def row(gold, choices):
    image = Image.new("RGB", (40, 40), (30, 120, 200))
    text = build_solve_messages(Problem(id="q", question=QUESTION, gold=gold, images=(image,)))[0]["content"][-1]["text"]
    return {"raw_prompt": [{"role": "user", "content": [{"type": "image", "image": image},
                                                       {"type": "text", "text": text}]}],
            "reward_model": {"ground_truth": gold, "style": "rule"},
            "extra_info": {"question": QUESTION, "choices": list(choices) if choices else None, "index": 0},
            "data_source": "toy", "index": 0}


def run_loop(server, tiny_vlm, cfg, gold, choices):
    import hydra

    model, processor = tiny_vlm

    async def go():
        loop = hydra.utils.instantiate(
            _agent_loop_registry["mathse_reflect"], trainer_config=DictConfigWrap(cfg), server_manager=server,
            tokenizer=processor.tokenizer, processor=processor, hf_model_type=model.config.model_type,
            dataset_cls=PILImages, data_config=DictConfigWrap(cfg.data))
        return await loop.run({"temperature": 0.0, "top_p": 1.0, "top_k": -1}, **row(gold, choices))

    return asyncio.run(go())


def one_sample(tokenizer, completion, gold, choices, tool_extra_fields=None):
    """A one-sample DataProto as verl's agent-loop worker hands it to the reward loop."""
    from verl import DataProto

    r_ids = tokenizer(completion, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    responses = torch.tensor([r_ids])
    prompts = torch.tensor([tokenizer("Solve it.", add_special_tokens=False)["input_ids"]])
    non_tensor = {
        "data_source": np.array(["toy"], dtype=object),
        "reward_model": np.array([{"ground_truth": gold, "style": "rule"}], dtype=object),
        "extra_info": np.array([{"index": 0, "choices": list(choices) if choices else None}], dtype=object),
        "raw_prompt": np.array([None], dtype=object),
    }
    non_tensor["raw_prompt"][0] = [{"role": "user", "content": QUESTION}]
    if tool_extra_fields is not None:
        non_tensor["tool_extra_fields"] = np.array([tool_extra_fields], dtype=object)
    return DataProto.from_dict(
        tensors={"prompts": prompts, "responses": responses, "input_ids": torch.cat([prompts, responses], 1),
                 "attention_mask": torch.ones(1, prompts.shape[1] + responses.shape[1], dtype=torch.long)},
        non_tensors=non_tensor)


def manager_for(cfg, tokenizer):
    from mathse_rl.integrations.verl.reward_manager import MathSERewardManager

    return MathSERewardManager(cfg, tokenizer, None)


@pytest.mark.parametrize("undecidable_as_wrong", [False, True])
def test_reward_is_one_exactly_when_the_loops_judge_accepts(make_server, tiny_vlm, monkeypatch, undecidable_as_wrong):
    from mathse_rl.integrations.verl import compute_score
    from mathse_rl.integrations.verl.algos import verdicts_accepted
    from mathse_rl.integrations.verl.trainer import verdicts

    patch_timeouts(monkeypatch)
    _, processor = tiny_vlm
    tokenizer = processor.tokenizer
    reward = {"reward_manager": {"name": "mathse"}, "reward_kwargs": {"reward": "verifier"}}
    cfg = trainer_config(reward, undecidable_as_wrong=undecidable_as_wrong)
    manager = manager_for(cfg, tokenizer)
    for completion, gold, choices, want in CORPUS:
        out = run_loop(make_server({QUESTION: completion}), tiny_vlm, cfg, gold, choices)
        fields = out.extra_fields
        assert fields["first_correct"] is want, completion
        (accepted,) = verdicts_accepted(verdicts([fields], [False])).tolist()  # the mathse trainer's acceptance
        ctx = dict(gold=gold, choices=choices)
        results = {
            "manager, loop's verdict": asyncio.run(manager.run_single(one_sample(tokenizer, completion, **ctx,
                                                                                tool_extra_fields=fields))),
            "manager, judged again": asyncio.run(manager.run_single(one_sample(tokenizer, completion, **ctx))),
        }
        results = {k: v["reward_extra_info"] for k, v in results.items()}
        extra = {"index": 0, "choices": list(choices) if choices else None}
        results["compute_score, loop's verdict"] = compute_score("toy", completion, gold, {**extra, **fields})
        # compute_score has no mathse section: the step's policy comes as a reward keyword (the
        # start check refuses a run where the two differ)
        results["compute_score, judged again"] = compute_score("toy", completion, gold, extra,
                                                               undecidable_as_wrong=undecidable_as_wrong)
        for where, r in results.items():
            assert (r["score"] == 1.0) == accepted == (r["acc"] == 1.0), (where, completion)
            assert r["scored"] is (want is not None or undecidable_as_wrong), (where, completion)
            assert isinstance(r["acc"], float) and r["score"] == (1.0 if want else 0.0), (where, completion)


def test_dapo_filter_groups_on_acc_through_verls_replay_buffer(tiny_vlm, monkeypatch):
    # DAPO keeps a group whose metric varies. Without a usable gold the metric is still a number
    # (acc 0.0: not accepted), so verl's buffer neither crashes nor keeps a group with no signal.
    import verl.trainer.ppo.v1.replay_buffer as rb

    patch_timeouts(monkeypatch)
    tokenizer = tiny_vlm[1].tokenizer
    manager = manager_for(trainer_config({"reward_manager": {"name": "mathse"}}), tokenizer)
    right, unstated, wrong = CORPUS[0][0], CORPUS[1][0], CORPUS[3][0]
    groups = {
        "nogold": [(right, None), (wrong, None)],  # nothing can be decided: no signal
        "unreadable": [(right, r"\frac{"), (right, r"\frac{")],
        "mixed": [(right, "5"), (wrong, "5")],  # one right, one wrong: kept
        "exploit": [(unstated, "5"), (wrong, "5")],  # both rejected by the strict judge: no signal
        "slow": [(CORPUS[-1][0], "7"), ("The answer to this problem is 7.", "7")],  # undecidable + right: kept
    }
    extra = {}
    for uid, samples in groups.items():
        for i, (completion, gold) in enumerate(samples):
            out = asyncio.run(manager.run_single(one_sample(tokenizer, completion, gold, None)))
            extra[f"{uid}_{i}"] = {"reward_extra_info": out["reward_extra_info"]}

    buffer = rb.ReplayBuffer("sync", OmegaConf.create({}), None, "drop", OmegaConf.create({}),
                             refill_fn=lambda n: None, filter_groups_metric="acc", train_batch_size=len(groups),
                             gen_batch_size=1)
    buffer.finished_keys["train"] = set(groups)
    buffer.partitions["train"] = {key: {} for key in extra}

    def kv_batch_get(keys, partition_id, select_fields):
        assert select_fields == ["extra_fields"]
        return {"extra_fields": [extra[k] for k in keys]}

    monkeypatch.setattr(rb.tq, "kv_batch_get", kv_batch_get)
    filtered, counts = buffer._dapo_filtered_keys("train")
    assert filtered == {"nogold", "unreadable", "exploit"}
    assert counts == {0.0: 3}


def test_a_reward_that_would_decide_differently_fails_at_start(make_server, tiny_vlm):
    tokenizer = tiny_vlm[1].tokenizer
    lenient = {"reward_manager": {"name": "mathse"},
               "reward_kwargs": {"reward": "verifier", "reward_options": {"strict": False}}}
    with pytest.raises(ValueError, match=r"reward.reward_kwargs.reward='verifier' sets strict=False.*"
                                         r"mathse.require_final_answer"):
        manager_for(trainer_config(lenient), tokenizer)
    composite = {"custom_reward_function": {"reward_kwargs": {"reward": "verifier+format"}}}
    # the agent loop refuses too (hydra wraps the ValueError), for compute_score, which sees no mathse section
    with pytest.raises(Exception, match=r"custom_reward_function.reward_kwargs.reward='verifier\+format'.*"
                                        r"mathse.judge='verifier'"):
        run_loop(make_server({QUESTION: CORPUS[0][0]}), tiny_vlm, trainer_config(composite), "5", None)
    wrong_fallback = {"reward_kwargs": {"reward": "verifier", "unscored_value": -1.0}}
    with pytest.raises(ValueError, match="unscored_value=-1.0.*undecidable_as_wrong"):
        manager_for(trainer_config(wrong_fallback, undecidable_as_wrong=True), tokenizer)
    # The reward left unnamed is the judge's; a lenient judge with a lenient reward agrees.
    manager_for(trainer_config({"reward_manager": {"name": "mathse"}}), tokenizer)
    agree = {"reward_kwargs": {"reward": "verifier", "reward_options": {"strict": False}}}
    manager_for(trainer_config(agree, require_final_answer=False), tokenizer)


# ----------------------------------------------------------------------------- an ORM judge inside the reward manager
ORM_OPTIONS = {"backend": "openai", "model": "m", "max_retries": 0, "timeout": 10}


def _orm_manager(tokenizer, endpoint, fallback="verifier"):
    cfg = OmegaConf.create({"reward": {"reward_manager": {"name": "mathse"}, "reward_kwargs": {
        "reward": "orm", "reward_options": {**ORM_OPTIONS, "endpoint": endpoint, "fallback": fallback},
        "batch_window_s": 0.001}}})
    return manager_for(cfg, tokenizer)


def test_one_http_client_per_process_however_many_batches(tiny_vlm, http_clients_built):
    from mathse_rl.orm.fault_server import FaultServer

    built = http_clients_built
    tokenizer = tiny_vlm[1].tokenizer
    with FaultServer() as server:
        manager = _orm_manager(tokenizer, server.endpoint("ok"))

        async def batches():  # as a reward-loop worker: one event loop, one chunk of samples after another
            results = []
            for _ in range(3):
                results += await asyncio.gather(*(manager.run_single(one_sample(tokenizer, c, "5", None))
                                                  for c in (CORPUS[0][0], CORPUS[3][0])))
            return results

        results = asyncio.run(batches())
        assert server.served("ok") == 6
    assert [r["reward_extra_info"]["source"] for r in results] == ["judge"] * 6
    assert len(built) == 1


def test_the_verifier_fallback_never_runs_on_the_event_loop(tiny_vlm, monkeypatch):
    # The judge server fails; the fallback verifier blocks until a coroutine on the manager's event
    # loop has run. On the loop it would wait out its 5 s and say so; off it, it is released at once.
    import mathse_rl.verify as verify
    from mathse_rl.orm.fault_server import FaultServer
    from mathse_rl.types import Verdict

    started, released = threading.Event(), threading.Event()
    waited = []

    def hanging(response, gold, **kw):
        started.set()
        waited.append(released.wait(timeout=5))
        return Verdict(True, "5", "exact")

    monkeypatch.setattr(verify, "verify", hanging)
    tokenizer = tiny_vlm[1].tokenizer
    with FaultServer() as server:
        manager = _orm_manager(tokenizer, server.endpoint("http500"))

        async def main():
            gaps, stop = [], asyncio.Event()

            async def ticker():  # how long the loop goes without running a coroutine
                last = time.perf_counter()
                while not stop.is_set():
                    await asyncio.sleep(0.01)
                    now = time.perf_counter()
                    gaps.append(now - last)
                    last = now
                    if started.is_set():  # the loop runs while the fallback waits
                        released.set()

            tick = asyncio.create_task(ticker())
            result = await manager.run_single(one_sample(tokenizer, CORPUS[0][0], "5", None))
            stop.set()
            await tick
            return result, max(gaps)

        result, stall = asyncio.run(main())
    assert waited == [True] and result["reward_extra_info"]["source"] == "verifier"
    print(f"longest event-loop stall while the fallback ran: {stall * 1000:.0f} ms")
