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


def trainer_config(prompt_length=PROMPT_LEN, max_model_len=1024, **mathse):
    """verl's trainer config with a ``mathse`` section (the step's names, plus the loop's own)."""
    rollout = {"prompt_length": prompt_length, "response_length": RESPONSE_LEN, "max_model_len": max_model_len,
               "name": "vllm"}
    cfg = {"actor_rollout_ref": {"rollout": rollout}, "data": {}}
    if mathse:
        cfg["mathse"] = mathse
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


def run_loop(server, tiny_vlm, name="mathse_reflect", cfg=None, run_kwargs=None, **row_kwargs):
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
        return await loop.run({"temperature": 0.0, "top_p": 1.0, "top_k": -1}, **row(**row_kwargs),
                              **(run_kwargs or {}))

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
    out = run_loop(server, tiny_vlm, cfg=trainer_config(reflect_mode="replace"))

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
    assert out.extra_fields["accepted"] == 1.0 and out.extra_fields["mathse_role"] == "replacement"
    assert out.num_turns == 2  # as trained: one prompt, one answer (reflection shows in mathse/* metrics)

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


def test_add_mode_keeps_the_policys_failure_and_adds_the_verified_refinement_beside_it(make_server, tiny_vlm):
    server = make_server({REFLECT_MARKER: RIGHT})
    refined, own = run_loop(server, tiny_vlm)  # mode: add is the default
    first, reflect = server.calls
    # the policy's own wrong answer, unchanged and rejected (GRPO keeps its negative advantage) ...
    assert own.response_ids == first.response_ids and own.extra_fields["mathse_role"] == "policy"
    assert own.extra_fields["accepted"] == 0.0
    # ... and, beside it under the same original prompt, the verified refinement, marked off-policy
    assert refined.response_ids == reflect.response_ids and refined.prompt_ids == own.prompt_ids
    assert refined.extra_fields["mathse_role"] == "refinement" and refined.extra_fields["accepted"] == 1.0
    assert set(refined.extra_fields) == set(own.extra_fields)  # verl stacks the same keys
    padded = verl_postprocess(refined, tiny_vlm)
    assert int(padded.response_mask.sum()) == len(refined.response_ids)


def test_add_mode_adds_nothing_when_the_refinement_fails(make_server, tiny_vlm):
    server = make_server()
    out = run_loop(server, tiny_vlm, cfg=trainer_config(keep_failed_refinement=True))
    assert len(server.calls) == 2 and out.response_ids == server.calls[0].response_ids
    assert not out.extra_fields["is_refined"] and out.extra_fields["refine_attempts"] == 1


def test_failed_refinements_use_every_attempt_and_the_last_is_returned(make_server, tiny_vlm):
    server = make_server()  # the random model never answers
    out = run_loop(server, tiny_vlm, cfg=trainer_config(reflect={"attempts": 2}, reflect_mode="replace", keep_failed_refinement=True))
    assert len(server.calls) == 3
    assert out.extra_fields["is_refined"] and not out.extra_fields["refine_verified"]
    assert out.extra_fields["refine_attempts"] == 2 and out.num_turns == 2
    assert out.response_ids == server.calls[-1].response_ids[:RESPONSE_LEN]
    assert out.prompt_ids == server.calls[0].prompt_ids


def test_reflection_off_is_a_single_turn_rollout(make_server, tiny_vlm):
    server = make_server()
    out = run_loop(server, tiny_vlm, cfg=trainer_config(reflect={"enabled": False}))
    assert len(server.calls) == 1 and not out.extra_fields["is_refined"]
    assert out.extra_fields["accepted"] == 0.0  # still judged: the verdict travels with the sample


def test_the_old_switch_name_still_works_with_a_warning(make_server, tiny_vlm):
    server = make_server()
    with pytest.warns(DeprecationWarning, match="mathse.reflect.enabled"):
        out = run_loop(server, tiny_vlm, cfg=trainer_config(reflect={"enable": False}))
    assert len(server.calls) == 1 and not out.extra_fields["is_refined"]


def test_orm_judge_and_multiple_choice(make_server, tiny_vlm):
    # judge: orm through mathse_rl.orm.load_judge (its rule-checking "verifier" backend, no model needed).
    server = make_server({REFLECT_MARKER: f"{ANSWER_PHRASE} B."})
    out = run_loop(server, tiny_vlm, cfg=trainer_config(judge="orm", critic={"backend": "verifier"}, reflect_mode="replace"),
                   gold="5", choices=["4", "5", "6"])
    assert "B. 5" in server.calls[1].prompt_text  # options shown in the reflection prompt
    assert out.extra_fields["is_refined"] and out.extra_fields["refine_verified"]


def test_reflection_prompt_over_the_limit_is_skipped_not_fatal(make_server, tiny_vlm):
    server = make_server()
    out = run_loop(server, tiny_vlm, cfg=trainer_config(max_prompt_length=PROMPT_LEN))
    assert len(server.calls) == 1
    assert out.extra_fields["reflect_too_long"] and not out.extra_fields["is_refined"]


def test_a_failing_judge_flags_the_sample_and_the_rollout_goes_on(make_server, tiny_vlm):
    from mathse_rl.rewards import Reward, register_reward, unregister_reward

    class Unreachable(Reward):
        name = "unreachable_judge"

        def score(self, samples):
            raise ConnectionError("judge endpoint down")

    register_reward("unreachable_judge", Unreachable)  # the judge is any reward name
    try:
        server = make_server()
        out = run_loop(server, tiny_vlm, cfg=trainer_config(judge="unreachable_judge"))
    finally:
        unregister_reward("unreachable_judge")
    assert len(server.calls) == 1 and out.response_ids == server.calls[0].response_ids
    assert not out.extra_fields["is_refined"]  # an undecidable answer is never reflected on
    assert out.extra_fields["accepted"] is None  # undecidable: never accepted, never trained as wrong
    assert out.extra_fields["mathse_counts"]["undecidable"] == 1


def test_bad_options_fail_loudly(make_server, tiny_vlm):
    from hydra.errors import InstantiationException  # verl builds loops with hydra, which wraps the error

    with pytest.raises(InstantiationException, match="attempts"):
        run_loop(make_server(), tiny_vlm, cfg=trainer_config(attempts=3))  # belongs under reflect
    with pytest.raises(InstantiationException, match="oracle"):
        run_loop(make_server(), tiny_vlm, cfg=trainer_config(judge="oracle"))
    with pytest.raises(InstantiationException, match="reflect_mode"):
        run_loop(make_server(), tiny_vlm, cfg=trainer_config(reflect_mode="merge"))
    legacy = trainer_config()
    legacy.trainer = {"use_v1": False}  # verl's legacy trainer takes one output per session
    with pytest.raises(InstantiationException, match="reflect_mode=replace"):
        run_loop(make_server(), tiny_vlm, cfg=legacy)


# --- the token budget of a reflection (what verl's vLLM / SGLang servers grant) -----------------
def _lengths(make_server, tiny_vlm):
    """Token counts of the dataset prompt and of its reflection prompt."""
    server = make_server({REFLECT_MARKER: RIGHT})
    run_loop(server, tiny_vlm, cfg=trainer_config(reflect_mode="replace"))
    return len(server.calls[0].prompt_ids), len(server.calls[1].prompt_ids)


def test_every_reflection_request_asks_for_the_full_response_length(make_server, tiny_vlm):
    server = make_server({REFLECT_MARKER: RIGHT})
    run_loop(server, tiny_vlm)
    assert server.calls[1].sampling_params.get("max_tokens") == RESPONSE_LEN
    assert "max_tokens" not in server.calls[0].sampling_params  # the first answer: exactly verl's single turn


@pytest.mark.parametrize("rule", ["vllm", "sglang"])
def test_a_reflection_longer_than_the_dataset_prompt_gets_the_full_budget(make_server, tiny_vlm, rule):
    first_len, reflect_len = _lengths(make_server, tiny_vlm)
    prompt_length = first_len + 4  # the dataset prompt fits; the reflection prompt is far longer
    assert reflect_len > prompt_length + RESPONSE_LEN
    budget = {"rule": rule, "prompt_length": prompt_length, "response_length": RESPONSE_LEN, "max_model_len": 1024}
    server = make_server({REFLECT_MARKER: RIGHT}, budget=budget)
    cfg = trainer_config(prompt_length=prompt_length, reflect_mode="replace")
    cfg.actor_rollout_ref.rollout.name = "hf_cpu"
    cfg.actor_rollout_ref.rollout.engine_kwargs = {"hf_cpu": {"budget_rule": rule}}
    out = run_loop(server, tiny_vlm, cfg=cfg)
    # without max_tokens the server would grant min(48, prompt_length + 48 - len) = 1 (vLLM) or 0 (SGLang)
    assert server.calls[1].granted == RESPONSE_LEN
    assert out.extra_fields["refine_verified"] and out.response_ids == server.calls[1].response_ids


def test_a_reflection_prompt_the_server_cannot_fully_serve_is_skipped_and_counted(make_server, tiny_vlm):
    _, reflect_len = _lengths(make_server, tiny_vlm)
    # the context holds the reflection prompt but not a full response after it
    server = make_server({REFLECT_MARKER: RIGHT})
    out = run_loop(server, tiny_vlm, cfg=trainer_config(max_model_len=reflect_len + RESPONSE_LEN - 1))
    assert len(server.calls) == 1
    assert out.extra_fields["reflect_too_long"] and not out.extra_fields["is_refined"]


def test_a_truncated_refinement_is_never_kept_in_place_of_the_sample(make_server, tiny_vlm):
    long_right = "Step 1: " + " ".join(["2 + 3 = 5."] * 40) + f" {ANSWER_PHRASE} 5."
    budget = {"rule": "vllm", "prompt_length": PROMPT_LEN, "response_length": RESPONSE_LEN, "max_model_len": 1024}
    server = make_server({REFLECT_MARKER: long_right}, budget=budget)  # longer than RESPONSE_LEN: cut at the budget
    out = run_loop(server, tiny_vlm, cfg=trainer_config(reflect_mode="replace", keep_failed_refinement=True))
    assert len(server.calls[1].response_ids) == RESPONSE_LEN
    assert out.extra_fields["reflect_truncated"] and not out.extra_fields["is_refined"]
    assert out.response_ids == server.calls[0].response_ids


def test_a_one_token_refinement_is_never_kept_in_place_of_the_sample(make_server, tiny_vlm):
    server = make_server({REFLECT_MARKER: ""})  # the refinement is a bare end-of-turn token
    out = run_loop(server, tiny_vlm, cfg=trainer_config(reflect_mode="replace", keep_failed_refinement=True))
    assert len(server.calls[1].response_ids) == 1
    assert not out.extra_fields["is_refined"] and out.response_ids == server.calls[0].response_ids


def test_a_failing_reflection_request_is_counted_and_the_sample_survives(make_server, tiny_vlm):
    server = make_server()
    server.fail_on = REFLECT_MARKER
    out = run_loop(server, tiny_vlm)
    assert out.extra_fields["reflect_errors"] == 1 and not out.extra_fields["is_refined"]
    assert out.response_ids == server.calls[0].response_ids


def test_a_slow_synchronous_judge_does_not_stall_other_rollouts(make_server, tiny_vlm):
    """Sample A's judge waits until sample B has reached the server: only possible when judging
    runs off the event loop (on the loop, B cannot start and A's wait times out)."""
    import threading

    import hydra

    from mathse_rl.rewards import Reward, register_reward, unregister_reward
    from mathse_rl.types import RewardOutput

    b_reached_server = threading.Event()
    waited: list[bool] = []

    class SlowJudge(Reward):  # synchronous, like the verifier's symbolic path at its timeout
        name = "slow_judge"

        def score(self, samples):
            waited.append(b_reached_server.wait(timeout=5.0))
            return [RewardOutput(1.0, {}) for _ in samples]

    model, processor = tiny_vlm
    cfg = trainer_config(judge="slow_judge")
    server = make_server({QUESTION: RIGHT})  # both answers right: no reflection, only judging
    original = server.generate

    async def generate(request_id, **kwargs):
        out = await original(request_id, **kwargs)
        if len(server.calls) == 2:
            b_reached_server.set()
        return out

    server.generate = generate

    async def go():
        loops = [hydra.utils.instantiate(
            _agent_loop_registry["mathse_reflect"], trainer_config=DictConfigWrap(cfg), server_manager=server,
            tokenizer=processor.tokenizer, processor=processor, hf_model_type=model.config.model_type,
            dataset_cls=PILImagesDataset, data_config=DictConfigWrap(cfg.data)) for _ in range(2)]
        return await asyncio.gather(*(loop.run({"temperature": 0.0}, **row()) for loop in loops))

    register_reward("slow_judge", SlowJudge)
    try:
        outs = asyncio.run(go())
    finally:
        unregister_reward("slow_judge")
    assert waited and waited[0], "sample B never reached the server while sample A was being judged"
    assert [o.extra_fields["accepted"] for o in outs] == [1.0, 1.0]


def test_a_wrong_answer_in_the_right_format_is_not_accepted_by_a_composite_judge(make_server, tiny_vlm):
    """judge: verifier+format scores a wrong, well-formatted answer 1.0 (the old acceptance
    threshold); the verdict comes from the verifier part alone."""
    from mathse_rl.rewards import get_reward
    from mathse_rl.types import RewardInput

    wrong = f"Step 1: 2 + 3 = 6. {ANSWER_PHRASE} 6."
    assert get_reward("verifier+format")([RewardInput(question=QUESTION, response=wrong, gold="5")])[0].score == 1.0
    server = make_server({QUESTION: wrong})
    out = run_loop(server, tiny_vlm, cfg=trainer_config(judge="verifier+format", reflect={"enabled": False}))
    assert out.extra_fields["accepted"] == 0.0 and out.extra_fields["first_correct"] is False


# --- what verl's single-turn loop carries, ours carries too -------------------------------------------
def test_every_request_of_a_sample_carries_what_verls_single_turn_loop_sends(make_server, tiny_vlm):
    """Audio and SGLang's video payload, the processor options and the priority go with the first
    request and every reflection; one request id per sample (sticky routing, prefix caching)."""
    ours = make_server({REFLECT_MARKER: RIGHT})
    run_loop(ours, tiny_vlm, run_kwargs={"priority": 3})
    theirs = make_server()
    run_loop(theirs, tiny_vlm, name="single_turn_agent", run_kwargs={"priority": 3})
    (single,) = theirs.calls
    first, reflection = ours.calls
    assert first.kwargs.keys() == single.kwargs.keys()  # audio_data, mm_processor_output, priority, ...
    for call in (first, reflection):
        assert call.kwargs == single.kwargs
    assert first.request_id == reflection.request_id != single.request_id


def test_full_determinism_uses_verls_request_id(make_server, tiny_vlm):
    server = make_server({REFLECT_MARKER: RIGHT})
    cfg = trainer_config()
    cfg.actor_rollout_ref.rollout.full_determinism = True
    run_loop(server, tiny_vlm, cfg=cfg, run_kwargs={"priority": 2})
    assert [c.request_id for c in server.calls] == ["det-2", "det-2"]


def test_router_replay_choices_are_carried_as_verls_loop_carries_them(make_server, tiny_vlm):
    server = make_server({REFLECT_MARKER: RIGHT})
    server.routed_experts = True
    refined, own = run_loop(server, tiny_vlm)
    theirs = make_server()
    theirs.routed_experts = True
    single = run_loop(theirs, tiny_vlm, name="single_turn_agent")
    assert own.routed_experts == single.routed_experts is not None  # the policy's answer: verl's slice
    assert refined.routed_experts is None  # routed under the reflection prompt: not replayable (refused at start)


@pytest.mark.parametrize("mode", ["add", "replace"])
def test_validation_scores_the_policys_own_answer(make_server, tiny_vlm, mode):
    """The mathse trainer marks validation batches: verl's validation metrics then score the first
    answer, not the one written after the gold-informed reflection; the reflection is still counted."""
    from mathse_rl.integrations.verl.fields import VALIDATE_FIELD

    server = make_server({REFLECT_MARKER: RIGHT})
    out = run_loop(server, tiny_vlm, cfg=trainer_config(reflect_mode=mode), run_kwargs={VALIDATE_FIELD: True})
    first, _reflection = server.calls
    assert out.response_ids == first.response_ids and out.extra_fields["mathse_role"] == "policy"
    assert out.extra_fields["accepted"] == 0.0 and out.extra_fields["refine_verified"]
    counts = out.extra_fields["mathse_counts"]
    assert counts["paths"] == 1 and counts.get("correct", 0) == 0 and counts["accepted"] == 1  # after reflection
