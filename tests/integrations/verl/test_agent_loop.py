"""The ``mathse_reflect`` agent loop, run for real on CPU.

The loop is verl's class (registered by our plugin), built the way verl's agent-loop
worker builds it, and talks to an in-process stand-in for verl's rollout server that
generates with the tiny Qwen2.5-VL. Its output goes through verl's own post-processing
(padding, multimodal inputs, M-RoPE position ids).
"""

from __future__ import annotations

import asyncio

import pytest
from omegaconf import OmegaConf
from PIL import Image

import verl  # noqa: F401  (loads the mathse_rl plugin)
from verl.experimental.agent_loop.agent_loop import AgentLoopWorker, DictConfigWrap, _agent_loop_registry
from verl.utils.dataset.rl_dataset import RLHFDataset

from mathse_rl.prompts import ANSWER_PHRASE, Problem, build_solve_messages

QUESTION = "What is 2 + 3?"
RIGHT = f"Step 1: 2 + 3 = 5. {ANSWER_PHRASE} 5."
REFLECT_MARKER = "previous solution is certainly wrong"
PROMPT_LEN, RESPONSE_LEN = 256, 48


class PILImagesDataset(RLHFDataset):
    """verl's dataset with its image extraction done by PIL (qwen_vl_utils needs torchvision)."""

    @classmethod
    def _process_multi_modal_info(cls, messages, image_patch_size, config):
        factor = image_patch_size * 2
        images = [
            part["image"].convert("RGB").resize((factor * 2, factor * 2))
            for m in messages if isinstance(m["content"], list)
            for part in m["content"] if part.get("type") == "image"
        ]
        return images or None, None, None


def trainer_config(**reflect):
    rollout = {"prompt_length": PROMPT_LEN, "response_length": RESPONSE_LEN, "max_model_len": 1024}
    cfg = {"actor_rollout_ref": {"rollout": rollout}, "data": {}}
    if reflect:
        cfg["mathse"] = {"reflect": reflect}
    return OmegaConf.create(cfg)


def row(gold="5", choices=None):
    """A dataset row as verl's RLHFDataset hands it to an agent loop (images inside raw_prompt)."""
    image = Image.new("RGB", (40, 40), (30, 120, 200))
    text = build_solve_messages(Problem(id="q", question=QUESTION, gold=gold, images=(image,)))[0]["content"][-1]["text"]
    return {
        "raw_prompt": [{"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": text}]}],
        "reward_model": {"ground_truth": gold, "style": "rule"},
        "extra_info": {"question": QUESTION, "choices": choices, "index": 0},
        "data_source": "toy",
        "index": 0,
    }


def run_loop(server, tiny_vlm, name="mathse_reflect", cfg=None, **row_kwargs):
    import hydra

    model, processor = tiny_vlm
    cfg = cfg if cfg is not None else trainer_config()

    async def go():
        # As AgentLoopWorker._run_agent_loop does: instantiate from the registry, then run.
        loop = hydra.utils.instantiate(
            _agent_loop_registry[name], trainer_config=DictConfigWrap(cfg), server_manager=server,
            tokenizer=processor.tokenizer, processor=processor, hf_model_type=model.config.model_type,
            dataset_cls=PILImagesDataset, data_config=DictConfigWrap(cfg.data),
        )
        return await loop.run({"temperature": 0.0, "top_p": 1.0, "top_k": -1}, **row(**row_kwargs))

    return asyncio.run(go())


def verl_postprocess(output, tiny_vlm, cfg=None):
    """verl's own per-sample post-processing (padding, multimodal inputs, position ids)."""
    model, processor = tiny_vlm
    worker = AgentLoopWorker.__new__(AgentLoopWorker)  # only the attributes post-processing reads
    worker.config = cfg if cfg is not None else trainer_config()
    worker.rollout_config = worker.config.actor_rollout_ref.rollout
    worker.tokenizer, worker.processor = processor.tokenizer, processor
    worker.mm_processor_kwargs = {}
    worker.reward_loop_worker_handles = None
    worker.distillation_enabled = False
    return asyncio.run(worker._agent_loop_postprocess(output, validate=False, raw_prompt=row()["raw_prompt"]))


def test_registered_in_verls_agent_loop_registry():
    assert _agent_loop_registry["mathse_reflect"]["_target_"].endswith("agent_loop.MathSEReflectAgentLoop")


def test_wrong_answer_is_reflected_and_the_refinement_answers_the_original_prompt(make_server, tiny_vlm):
    server = make_server({REFLECT_MARKER: RIGHT})  # the first answer is the random model's: wrong
    out = run_loop(server, tiny_vlm)

    first, reflect = server.calls
    assert not first.scripted and REFLECT_MARKER not in first.prompt_text
    # The reflection prompt holds the question, the image and the wrong solution with a critique.
    assert QUESTION in reflect.prompt_text and reflect.n_images == 1
    wrong_text = tiny_vlm[1].tokenizer.decode(first.response_ids, skip_special_tokens=True).strip()
    assert wrong_text in reflect.prompt_text and "Error analysis:" in reflect.prompt_text
    # The sample is the refinement under the ORIGINAL prompt and image.
    assert out.prompt_ids == first.prompt_ids
    assert out.response_ids == reflect.response_ids and sum(out.response_mask) == len(out.response_ids)
    assert len(out.multi_modal_data["images"]) == 1
    assert out.extra_fields["is_refined"] and out.extra_fields["refine_verified"]
    assert out.extra_fields["first_correct"] is False and out.extra_fields["refine_attempts"] == 1
    assert out.num_turns == 4  # verl logs num_turns/mean: reflection shows in its own metrics

    padded = verl_postprocess(out, tiny_vlm)
    assert padded.position_ids.shape == (1, 4, PROMPT_LEN + RESPONSE_LEN)  # text + 3 M-RoPE rows
    assert padded.multi_modal_inputs["image_grid_thw"].tolist() == [[1, 4, 4]]
    assert int(padded.response_mask.sum()) == len(out.response_ids)


def test_correct_first_answer_is_returned_unchanged(make_server, tiny_vlm):
    server = make_server({QUESTION: RIGHT})
    out = run_loop(server, tiny_vlm)
    (only,) = server.calls
    assert out.prompt_ids == only.prompt_ids and out.response_ids == only.response_ids
    assert out.extra_fields["first_correct"] is True
    assert not out.extra_fields["is_refined"] and out.extra_fields["refine_attempts"] == 0
    assert out.num_turns == 2


def test_sample_matches_verls_single_turn_loop_when_no_reflection_happens(make_server, tiny_vlm):
    ours = run_loop(make_server({QUESTION: RIGHT}), tiny_vlm)
    theirs = run_loop(make_server({QUESTION: RIGHT}), tiny_vlm, name="single_turn_agent")
    assert (ours.prompt_ids, ours.response_ids, ours.response_mask) == (
        theirs.prompt_ids, theirs.response_ids, theirs.response_mask)
    a, b = verl_postprocess(ours, tiny_vlm), verl_postprocess(theirs, tiny_vlm)
    assert a.position_ids.equal(b.position_ids) and a.input_ids.equal(b.input_ids)


def test_failed_refinements_use_every_attempt_and_the_last_is_returned(make_server, tiny_vlm):
    server = make_server()  # the random model never answers
    out = run_loop(server, tiny_vlm, cfg=trainer_config(max_attempts=2))
    assert len(server.calls) == 3
    assert out.extra_fields["is_refined"] and not out.extra_fields["refine_verified"]
    assert out.extra_fields["refine_attempts"] == 2 and out.num_turns == 6
    assert out.response_ids == server.calls[-1].response_ids[:RESPONSE_LEN]
    assert out.prompt_ids == server.calls[0].prompt_ids


def test_reflection_off_is_a_single_turn_rollout(make_server, tiny_vlm):
    server = make_server()
    out = run_loop(server, tiny_vlm, cfg=trainer_config(enable=False))
    assert len(server.calls) == 1 and not out.extra_fields["is_refined"]


def test_orm_judge_and_multiple_choice(make_server, tiny_vlm):
    # judge: orm through mathse_rl.orm.load_judge (its rule-checking "verifier" backend, no model needed).
    server = make_server({REFLECT_MARKER: f"{ANSWER_PHRASE} B."})
    out = run_loop(server, tiny_vlm, cfg=trainer_config(judge="orm", orm={"backend": "verifier"}),
                   gold="5", choices=["4", "5", "6"])
    assert "B. 5" in server.calls[1].prompt_text  # options shown in the reflection prompt
    assert out.extra_fields["is_refined"] and out.extra_fields["refine_verified"]


def test_reflection_prompt_over_the_limit_is_skipped_not_fatal(make_server, tiny_vlm):
    server = make_server()
    out = run_loop(server, tiny_vlm, cfg=trainer_config(max_prompt_length=PROMPT_LEN))
    assert len(server.calls) == 1
    assert out.extra_fields["reflect_too_long"] and not out.extra_fields["is_refined"]


def test_a_failing_judge_flags_the_sample_and_the_rollout_goes_on(make_server, tiny_vlm, monkeypatch):
    from mathse_rl.integrations.verl.agent_loop import JUDGES

    async def unreachable(cfg, problem, response):
        raise ConnectionError("judge endpoint down")

    monkeypatch.setitem(JUDGES, "unreachable", unreachable)  # judges are a registry: add one
    server = make_server()
    out = run_loop(server, tiny_vlm, cfg=trainer_config(judge="unreachable"))
    assert len(server.calls) == 1 and out.response_ids == server.calls[0].response_ids
    assert out.extra_fields["judge_error"] and not out.extra_fields["is_refined"]


def test_bad_options_fail_loudly(make_server, tiny_vlm):
    from hydra.errors import InstantiationException  # verl builds loops with hydra, which wraps the error

    with pytest.raises(InstantiationException, match="unknown mathse.reflect option"):
        run_loop(make_server(), tiny_vlm, cfg=trainer_config(attempts=3))
    with pytest.raises(InstantiationException, match="judge must be one of"):
        run_loop(make_server(), tiny_vlm, cfg=trainer_config(judge="oracle"))
