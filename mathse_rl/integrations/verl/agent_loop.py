"""The ``mathse_reflect`` agent loop: solve, judge, reflect on a wrong answer, re-judge.

One rollout sample, MathSE's online form:

1. the rollout server answers the dataset prompt (images included);
2. the answer is judged by the MathSE step's :class:`mathse_rl.step.Judge` (``mathse.judge``:
   a reward name; a composite such as ``verifier+format`` decides on its verifier part only).
   The verdict is tri-state: correct, wrong, or ``None`` (undecidable: no gold, verifier
   timeout, judge failure), which is counted and never accepted. ``Judge.ajudge_one`` runs off
   the event loop and batches the calls of concurrent samples, so a slow judge never stalls
   the other rollouts of the worker;
3. a wrong answer (with ``mathse.undecidable_as_wrong``, also an undecidable one whose gold is
   usable) is critiqued and reflected on by
   :func:`mathse_rl.step.areflect_and_rejudge`, which calls back into this loop to generate
   (question, images, the wrong solution, the error step and analysis) and re-judges each
   refinement; up to ``mathse.reflect.attempts`` refinements, stopping at the first verified one.
   This module only converts verl's sample to and from the step's records.

Token budget. Every reflection request carries an explicit ``max_tokens`` (default: the
rollout's ``response_length``). Without it verl's servers grant
``min(response_length, prompt_length + response_length - len(prompt))`` new tokens, and a
reflection prompt is longer than the dataset prompt: the refinement would be cut to a few
tokens. Before sending, the prompt is checked against what the engine will actually grant
(:mod:`mathse_rl.integrations.verl.budget`, the rule of verl's vLLM / SGLang servers): a prompt
that leaves less than ``max_tokens`` is skipped and counted (``reflect_too_long``). A
refinement that stops without an end-of-sequence token at its budget is truncated
(``reflect_truncated``): never verified, never kept. A reflection request that raises is
counted (``reflect_errors``); the group goes on.

What goes back to verl (``mode``):

- ``add`` (default): the policy's own first answer is returned as sampled (on-policy, it keeps
  its reward and, in GRPO, its negative advantage), and a *verified* refinement is returned
  **beside it** as a second output of the same session, marked ``mathse_role="refinement"``.
  verl 0.9 takes several outputs per session (its multi-trajectory form); its GRPO would give
  every output of a session the advantage of the last one, so the ``mathse`` trainer
  (:mod:`mathse_rl.integrations.verl.trainer`, ``trainer.v1.trainer_mode=mathse``) replaces the
  refinement's advantage with a fixed positive weight: through the PPO surrogate with ratio 1
  (old log-probs are recomputed under the original prompt) that is exactly a supervised term
  ``weight * -log pi(refinement | original prompt)``, the MathSE objective, instead of treating
  text the policy did not sample as an on-policy member of the group. Why a second output and
  not a field on the first: the refinement's tokens need their own log-probs, masks and
  multimodal inputs, which verl computes per output. Such a session is scored on the policy's
  answer alone (verl copies that score onto the refinement): verl's own scoring of a
  two-output session fails for VLMs and could read the refinement's row (:mod:`.compat`).
- ``replace``: the previous behaviour: the refinement takes the sample's place under the
  original prompt (verified, or with ``keep_failed_refinement`` a failed but complete one).

Every output carries the same extra fields (``EXTRA_FIELDS``): ``accepted`` (the judge's
verdict on *this* output: 1.0, 0.0, or None = undecidable), ``first_correct``, ``is_refined``,
``refine_verified``, ``refine_attempts``, ``reflect_too_long``, ``reflect_truncated``,
``reflect_errors``, ``judge_error``, ``mathse_role`` (``policy``, ``refinement`` added beside it,
``replacement`` in its place), ``mathse_counts`` (the sample's
:class:`mathse_rl.step.StepCounters`, on the policy's output only) and ``mathse_verdict`` (the
judge's verdict on this output and the reward derived from it, which the ``mathse`` reward
manager and ``compute_score`` use instead of judging again: one verdict per path, see
:mod:`mathse_rl.integrations.verl.scoring`). The ``mathse`` trainer
accepts ``mathse_rft`` samples on ``accepted`` (never on a summed or shaped reward) and sums
the counts into logged metrics (``mathse/refine_rate``, ``mathse/accepted_frac``, ...,
``mathse/<data_source>/...``).

Inside verl (Ray) a ``backend: local`` critic or ORM judge is loaded once per node and shared by
the node's agent-loop workers (:mod:`.shared_judge`), not once per worker. Validation batches
carry the ``mathse`` trainer's marker (``fields.VALIDATE_FIELD``): the policy's own answer is
returned in either mode (verl's validation metrics score it) and the reflection is only counted.
Every request of a sample carries what verl's single-turn loop sends (audio, SGLang's video
payload, processor options, priority) under one request id (``det-{priority}`` with
``rollout.full_determinism``, as verl's), and the policy's output keeps the engine's router
choices (router replay); each output counts as one prompt and one answer (``num_turns=2``).

Options: the trainer config section ``mathse`` holds the step's vocabulary
(:class:`mathse_rl.step.StepConfig`: ``judge``, ``critic``, ``reflect.enabled``,
``reflect.attempts``, ``reflect.max_tokens``, ...) and this loop's own (:class:`VerlOptions`:
``reflect_mode``, ``keep_failed_refinement``, ...); keyword arguments in a verl agent-loop
config file (``rollout.agent.agent_loop_config_path``) override them. ``+mathse.reflect.attempts=2``
on a plain verl command line, no ``+`` with our recipes. Select the loop for every row with
``actor_rollout_ref.rollout.agent.default_agent_loop=mathse_reflect``.
"""

from __future__ import annotations

import functools
import json
import logging
import warnings
from dataclasses import dataclass, fields
from typing import Any, Mapping, Sequence
from uuid import uuid4

from verl.experimental.agent_loop.agent_loop import AgentLoopBase, AgentLoopOutput, register
from verl.utils.profiler import simple_timer
from verl.workers.rollout.replica import TokenOutput

from mathse_rl.integrations.verl.budget import rule_for
from mathse_rl.integrations.verl.compat import install_session_scoring
from mathse_rl.integrations.verl.fields import (EXTRA_FIELDS, ROLE_POLICY, ROLE_REFINEMENT, ROLE_REPLACEMENT,
                                                VALIDATE_FIELD)
from mathse_rl.integrations.verl.scoring import VERDICT_FIELD, check_reward_config, verdict_fields
from mathse_rl.step import (Critic, Generation, Judge, PathVerdict, ReflectItem, ReflectOutcome, ReflectRequest,
                            StepConfig, StepCounters, TokenBudget, acritique, areflect_and_rejudge, step_config)
from mathse_rl.types import Problem

logger = logging.getLogger(__name__)

NAME = "mathse_reflect"
# Trainer-config section holding the step's and this loop's options.
CONFIG_SECTION = "mathse"
MODES = ("add", "replace")
# Renamed options: old spelling -> new spelling (the old one still works, with a warning).
DEPRECATED = {"reflect.enable": "reflect.enabled", "reflect.max_attempts": "reflect.attempts"}


@dataclass(frozen=True)
class VerlOptions:
    """This loop's own options, beside the step's (trainer config ``mathse.*``)."""

    reflect_mode: str = "add"  # "add": a verified refinement goes beside the policy's sample; "replace": in its place
    keep_failed_refinement: bool = False  # replace mode: a complete but unverified refinement replaces the sample too
    max_prompt_length: int = 0  # longest reflection prompt in tokens; 0 = what leaves the server room for max_tokens
    min_refinement_tokens: int = 2  # a refinement shorter than this never replaces a sample
    refine_sft_coef: float = 1.0  # add mode, GRPO: advantage of an added verified refinement (its SFT weight)

    def __post_init__(self) -> None:
        if self.reflect_mode not in MODES:
            raise ValueError(f"mathse.reflect_mode must be one of {list(MODES)}, got {self.reflect_mode!r}")
        if self.max_prompt_length < 0:
            raise ValueError(f"mathse.max_prompt_length must be >= 0, got {self.max_prompt_length}")
        if self.refine_sft_coef <= 0:
            raise ValueError(f"mathse.refine_sft_coef must be positive, got {self.refine_sft_coef}")


def resolve_options(trainer_config: Any, overrides: Mapping[str, Any] | None = None) -> tuple[StepConfig, VerlOptions]:
    """The step's config and this loop's options from ``mathse`` (then ``overrides``); unknown keys fail."""
    values = _plain(trainer_config.get(CONFIG_SECTION) if hasattr(trainer_config, "get") else None)
    for key, value in _plain(overrides).items():
        if isinstance(value, Mapping) and isinstance(values.get(key), Mapping):
            values[key] = {**values[key], **value}
        else:
            values[key] = value
    for old, new in DEPRECATED.items():
        section, name = old.split(".")
        sub = values.get(section)
        if isinstance(sub, Mapping) and name in sub:
            warnings.warn(f"mathse.{old} is deprecated; use mathse.{new}", DeprecationWarning, stacklevel=2)
            sub = dict(sub)
            sub.setdefault(new.split(".")[1], sub.pop(name))
            sub.pop(name, None)
            values[section] = sub
    own = {f.name for f in fields(VerlOptions)}
    verl_options = VerlOptions(**{k: values.pop(k) for k in list(values) if k in own})
    return step_config(values), verl_options


def _plain(mapping: Any) -> dict[str, Any]:
    from omegaconf import DictConfig, OmegaConf

    if isinstance(mapping, DictConfig):
        return dict(OmegaConf.to_container(mapping, resolve=True))  # type: ignore[arg-type]
    return dict(mapping or {})


def node_shared(step: StepConfig, in_ray: bool | None = None) -> StepConfig:
    """``step`` with every ``backend: local`` ORM (critic, judge options, a composite's ORM part)
    switched to the one-per-node shared judge when running inside Ray (:mod:`.shared_judge`)."""
    import dataclasses

    from mathse_rl.integrations.verl.shared_judge import shared_on_node

    options = shared_on_node(step.judge_options, in_ray)
    options = {k: shared_on_node(v, in_ray) if isinstance(v, Mapping) else v for k, v in options.items()}
    return dataclasses.replace(step, critic=shared_on_node(step.critic, in_ray), judge_options=options)


@functools.lru_cache(maxsize=8)
def _judge(config_json: str) -> Judge:
    # One judge (and critic) per distinct config and process: verl builds a loop object per sample.
    return Judge(json.loads(config_json))


@functools.lru_cache(maxsize=8)
def _check_reward(reward_json: str, step_json: str) -> None:
    # Once per process and config: a reward that would decide differently from the judge is refused.
    check_reward_config({"reward": json.loads(reward_json)}, step_config(json.loads(step_json)))


@functools.lru_cache(maxsize=8)
def _critic(config_json: str) -> Critic:
    return Critic(json.loads(config_json))


# ---------------------------------------------------------------------------------------------
# the rows verl hands an agent loop -> our records
# ---------------------------------------------------------------------------------------------
def _text_of(message: Mapping[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content.replace("<image>", "").strip()
    parts = [p.get("text", "") for p in content or [] if isinstance(p, Mapping) and p.get("type") == "text"]
    return "\n".join(parts).strip()


def _choices(value: Any) -> tuple[str, ...] | None:
    if value is None:
        return None
    values = tuple(str(v) for v in list(value))
    return values or None


def problem_from_row(row: Mapping[str, Any], images: Sequence[Any]) -> tuple[Problem, bool]:
    """The row's :class:`Problem`, and whether its question text came from ``extra_info.question``.

    When it did not, the question is the text of the last user turn, which already lists the
    options of a multiple-choice question.
    """
    extra = row.get("extra_info") or {}
    reward_model = row.get("reward_model") or {}
    gold = reward_model.get("ground_truth")
    question = extra.get("question")
    from_extra = bool(question)
    if not question:
        users = [m for m in row.get("raw_prompt", []) if m.get("role") == "user"]
        question = _text_of(users[-1]) if users else ""
    problem = Problem(
        id=str(extra.get("id", extra.get("index", row.get("index", "")))),
        question=str(question),
        gold=None if gold is None or str(gold) == "" else str(gold),  # "" = no reference answer
        images=tuple(images),
        choices=_choices(extra.get("choices")),
        data_source=str(row.get("data_source", "")),
    )
    return problem, from_extra


def _score(verdict: bool | None) -> float | None:
    return None if verdict is None else float(bool(verdict))


# verl's worker scores a session of two outputs in a way that fails for VLMs (see compat.py)
install_session_scoring()


@register(NAME)
class MathSEReflectAgentLoop(AgentLoopBase):
    """Single-turn rollout plus MathSE's judge → reflect → re-judge on wrong answers."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        own = {f.name for f in fields(StepConfig)} | {f.name for f in fields(VerlOptions)}
        options = {k: kwargs.pop(k) for k in list(kwargs) if k in own}
        super().__init__(*args, **kwargs)
        step, self.options = resolve_options(self.config, options)
        self.step = node_shared(step)
        trainer = self.config.get("trainer", None) or {}
        if self.options.reflect_mode == "add" and not trainer.get("use_v1", True):
            raise ValueError("mathse.reflect_mode=add returns a refinement as a second output of the session, which "
                             "only verl's v1 trainer takes (trainer.use_v1=true, the default); "
                             "use mathse.reflect_mode=replace with the legacy trainer")
        step_json = json.dumps(_plain_step(self.step), sort_keys=True)
        _check_reward(json.dumps(_plain(self.config.get("reward", None)), sort_keys=True, default=repr), step_json)
        self.judge = _judge(step_json)
        self.critic = _critic(json.dumps(self.step.critic, sort_keys=True)) if self.step.reflect.enabled else None
        self.response_length = int(self.rollout_config.response_length)
        self.reflect_max_tokens = int(self.step.reflect.max_tokens or self.response_length)
        self.budget_rule = rule_for(str(self.rollout_config.get("name", "vllm")),
                                    _plain(self.rollout_config.get("engine_kwargs", None)))
        self.max_model_len = self._max_model_len()
        self.eos_ids = _eos_ids(self.tokenizer)

    def _max_model_len(self) -> int:
        """The server's context: ``rollout.max_model_len``, or (as verl's servers do when it is
        unset) the model's ``max_position_embeddings``."""
        value = self.rollout_config.get("max_model_len", None)
        if value:
            return int(value)
        return _max_position_embeddings(str(self.config.actor_rollout_ref.model.path))

    def token_budget(self, request: "_Request") -> TokenBudget:
        """What the server grants a reflection (``max_tokens`` asked explicitly). A user cap on
        the reflection prompt (``max_prompt_length``) is a smaller context: a prompt fits it
        exactly when it is at most that long."""
        context = self.max_model_len
        if self.options.max_prompt_length:
            cap = self.options.max_prompt_length + self.reflect_max_tokens + (1 if self.budget_rule == "sglang" else 0)
            context = min(context, cap)

        async def count(messages: list[dict[str, Any]], _images: tuple[Any, ...]) -> int:
            return len(await self._reflection_tokens(messages, request))

        return TokenBudget(self.reflect_max_tokens, context, count, self.budget_rule)

    async def run(self, sampling_params: dict[str, Any], priority: int = 0, **kwargs: Any
                  ) -> AgentLoopOutput | list[AgentLoopOutput]:
        messages = list(kwargs["raw_prompt"])
        multi_modal_data = await self.process_multi_modal_info(messages)
        images, videos, audios = (multi_modal_data.get(k) for k in ("images", "videos", "audios"))
        self._assert_mm_supported(bool(multi_modal_data))
        mm_inputs: dict[str, Any] = {}
        prompt_ids = await self.ct_build_initial_tokens(messages, images=images, videos=videos, audios=audios,
                                                        mm_inputs_out=mm_inputs)
        # What verl's single-turn loop sends with every request, kept for the reflections too; one
        # request id per sample (verl's rule under full_determinism), so a sample's calls stick to
        # one server and its prefix cache.
        full_determinism = bool(getattr(self.rollout_config, "full_determinism", False))
        request = _Request(
            request_id=f"det-{int(priority)}" if full_determinism else uuid4().hex,
            images=images, videos=videos, audios=audios,
            mm_processor_kwargs=self._get_mm_processor_kwargs(audios),
            mm_processor_output=self.build_sglang_video_payload(videos, mm_inputs),
            priority=int(priority))

        metrics: dict[str, Any] = {}
        with simple_timer("generate_sequences", metrics):
            first = await self._generate(prompt_ids, sampling_params, request)
        problem, from_extra = problem_from_row(kwargs, images or ())
        first_text = self._decode(first)
        counters = StepCounters()
        verdict = await self.judge.ajudge_one(problem, first_text, counters=counters)

        outcome: ReflectOutcome | None = None
        if self.step.reflect.enabled and self.judge.reflects_on(verdict):  # wrong (undecidable_as_wrong: or undecided)
            outcome = await self._reflect(problem, from_extra, messages, first_text, verdict, counters,
                                          sampling_params, request, metrics)
        metrics["num_preempted"] = first.num_preempted if first.num_preempted is not None else -1
        extra = _extra_fields(verdict, outcome, counters)
        extra[VERDICT_FIELD] = verdict_fields(self.judge, verdict)  # the reward is derived from this verdict
        # every output is trained as one prompt and one answer: verl's num_turns metrics stay those of the
        # samples (as verl's single-turn loop logs them); reflection shows in mathse/* (refine_rate, ...)
        num_turns = 2
        refinement = self._kept(outcome)
        extra["is_refined"] = refinement is not None
        if refinement is None or kwargs.get(VALIDATE_FIELD):
            # validation scores the policy's own answer; reflection only adds to the counts
            return await self._as_output(prompt_ids, first, multi_modal_data, request, metrics, extra, num_turns)
        refined_extra = dict(extra, accepted=_score(outcome.status == "verified"), mathse_role=ROLE_REFINEMENT)
        refined_extra[VERDICT_FIELD] = verdict_fields(self.judge, outcome.verdict)
        if self.options.reflect_mode == "replace":
            refined_extra["mathse_role"] = ROLE_REPLACEMENT
            return await self._as_output(prompt_ids, refinement, multi_modal_data, request, metrics,
                                         refined_extra, num_turns)
        # add: the policy's own answer comes last, so verl's per-session bookkeeping (rewards,
        # GRPO's group statistics) is that of the on-policy sample; the counts travel once.
        refined_extra["mathse_counts"] = {}
        refined_out = await self._as_output(prompt_ids, refinement, multi_modal_data, request, dict(metrics),
                                            refined_extra, num_turns)
        policy_out = await self._as_output(prompt_ids, first, multi_modal_data, request, metrics, extra, num_turns)
        return [refined_out, policy_out]

    async def _reflect(self, problem: Problem, from_extra: bool, messages: list[Any], wrong: str,
                       verdict: PathVerdict, counters: StepCounters, sampling_params: dict[str, Any],
                       sample: "_Request", metrics: dict[str, Any]) -> ReflectOutcome:
        """One wrong answer through the step's critique → reflect → re-judge, generating here."""
        # Options already in the question text (it came from the raw prompt) are not listed twice.
        shown = problem if from_extra else Problem(id=problem.id, question=problem.question, gold=problem.gold,
                                                   images=problem.images, choices=None,
                                                   data_source=problem.data_source)
        (critique,) = await acritique(self.critic, [shown], [wrong], verdicts=[verdict], counters=counters)
        system = tuple(dict(m) for m in messages if m.get("role") == "system")
        item = ReflectItem(shown, wrong, critique, system)

        async def generate(requests: list[ReflectRequest]) -> list[Generation | BaseException]:
            outs: list[Generation | BaseException] = []
            for request in requests:
                params = dict(sampling_params, max_tokens=request.max_tokens)
                if request.temperature is not None:
                    params["temperature"] = request.temperature
                try:
                    ids = await self._reflection_tokens(request.messages, sample)
                    with simple_timer("generate_sequences", metrics):
                        out = await self._generate(ids, params, sample)
                except Exception as exc:  # one failed request must not fail the group: counted by the step
                    logger.warning("mathse_reflect: reflection for sample %s failed: %s: %s", problem.id,
                                   type(exc).__name__, exc)
                    outs.append(exc)
                    continue
                stop = "length" if self._truncated(out, min(request.max_tokens, self.response_length)) else "stop"
                outs.append(Generation(self._decode(out), stop, len(out.token_ids), out))
            return outs

        (outcome,) = await areflect_and_rejudge(self.judge, [item], generate, self.token_budget(sample),
                                                critic=self.critic, options=self.step.reflect, counters=counters)
        return outcome

    def _kept(self, outcome: ReflectOutcome | None) -> TokenOutput | None:
        """The refinement returned with the sample: a verified one; in replace mode with
        ``keep_failed_refinement``, also a complete rejected one of at least ``min_refinement_tokens``.
        A truncated, too-long or failed reflection never is."""
        if outcome is None or outcome.generation is None:
            return None
        if outcome.status == "verified":
            return outcome.generation.output
        if (self.options.reflect_mode == "replace" and self.options.keep_failed_refinement
                and outcome.status == "rejected"
                and len(outcome.generation.output.token_ids) >= self.options.min_refinement_tokens):
            return outcome.generation.output
        return None

    def _truncated(self, output: TokenOutput, budget: int) -> bool:
        """Stopped on its token limit: aborted, or ``budget`` tokens written without an end token
        (verl's vLLM server reports ``completed`` for both a stop and a length finish)."""
        ids = list(output.token_ids)
        if output.stop_reason in ("aborted", "length") or not ids:
            return True
        return len(ids) >= budget and ids[-1] not in self.eos_ids

    async def _reflection_tokens(self, messages: list[dict[str, Any]], request: "_Request") -> list[int]:
        # The builder directly: ct_build_initial_tokens would reject a prompt over prompt_length.
        return await self.loop.run_in_executor(None, lambda: self.continuous_token_builder.build_initial_tokens(
            messages, images=request.images, videos=request.videos, audios=request.audios))

    async def _generate(self, prompt_ids: list[int], sampling_params: dict[str, Any], request: "_Request"
                        ) -> TokenOutput:
        return await self.server_manager.generate(
            request_id=request.request_id,
            prompt_ids=prompt_ids,
            sampling_params=sampling_params,
            image_data=request.images,
            audio_data=request.audios,
            video_data=request.videos,
            mm_processor_output=request.mm_processor_output,
            mm_processor_kwargs=request.mm_processor_kwargs,
            priority=request.priority,
        )

    def _decode(self, output: TokenOutput) -> str:
        return self.tokenizer.decode(output.token_ids[: self.response_length], skip_special_tokens=True)

    async def _as_output(self, prompt_ids: list[int], output: TokenOutput, multi_modal_data: dict[str, Any],
                         request: "_Request", metrics: dict[str, Any],
                         extra: dict[str, Any], num_turns: int) -> AgentLoopOutput:
        """``output`` as the response to ``prompt_ids`` (the dataset prompt), as verl's single-turn loop builds it."""
        merge_result, response_mask, response_logprobs = await self.ct_merge_assistant_token(
            prompt_ids,
            output.token_ids,
            [],
            [] if output.log_probs else None,
            assistant_logprobs=output.log_probs if output.log_probs else None,
        )
        response_ids = merge_result.token_ids[-len(response_mask):] if response_mask else []
        prompt_ids = merge_result.token_ids[: len(merge_result.token_ids) - len(response_mask)]
        extra_fields = dict(output.extra_fields)
        extra_fields.update(extra)
        extra_fields.update({"turn_scores": [], "tool_rewards": []})
        return AgentLoopOutput(
            prompt_ids=prompt_ids,
            response_ids=response_ids[: self.response_length],
            response_mask=response_mask[: self.response_length],
            response_logprobs=response_logprobs[: self.response_length] if response_logprobs else None,
            # the engine's routes (router replay, R3) cover the prompt it answered: a refinement's were
            # taken under the reflection prompt, not the one it is trained with (refused at start)
            routed_experts=(output.routed_experts[: len(prompt_ids) + self.response_length]
                            if output.routed_experts is not None and extra.get("mathse_role") == ROLE_POLICY
                            else None),
            multi_modal_data=multi_modal_data,
            mm_processor_kwargs=request.mm_processor_kwargs,
            mm_processor_output=request.mm_processor_output,
            num_turns=num_turns,
            metrics=metrics,
            extra_fields=extra_fields,
        )


@dataclass(frozen=True)
class _Request:
    """What every request of one sample carries to the rollout server (as verl's single-turn loop sends it)."""

    request_id: str
    images: Any
    videos: Any
    audios: Any
    mm_processor_kwargs: dict[str, Any]
    mm_processor_output: Any
    priority: int


def _extra_fields(verdict: PathVerdict, outcome: ReflectOutcome | None, counters: StepCounters) -> dict[str, Any]:
    """The policy output's extra fields (see the module docstring)."""
    counts = counters.to_counts()
    status = outcome.status if outcome is not None else None
    return {
        "accepted": _score(verdict.correct),
        "first_correct": verdict.correct,
        "is_refined": False,
        "refine_verified": status == "verified",
        "refine_attempts": int(outcome.attempts) if outcome is not None else 0,
        "reflect_too_long": bool(counts.get("reflect_too_long", 0)),
        "reflect_truncated": bool(counts.get("truncated", 0)),
        "reflect_errors": int(counts.get("generate_errors", 0)),
        "judge_error": bool(counts.get("judge_errors", 0)) or verdict.judge_error,
        "mathse_role": ROLE_POLICY,
        "mathse_counts": counts,
    }


def _plain_step(config: StepConfig) -> dict[str, Any]:
    import dataclasses

    return dataclasses.asdict(config)


def _eos_ids(tokenizer: Any) -> set[int]:
    ids = {getattr(tokenizer, "eos_token_id", None), getattr(tokenizer, "pad_token_id", None)}
    for token in ("<|im_end|>", "<|endoftext|>"):
        tid = tokenizer.convert_tokens_to_ids(token) if hasattr(tokenizer, "convert_tokens_to_ids") else None
        if isinstance(tid, int) and tid != getattr(tokenizer, "unk_token_id", None):
            ids.add(tid)
    return {i for i in ids if isinstance(i, int)}


@functools.lru_cache(maxsize=8)
def _max_position_embeddings(model_path: str) -> int:
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(model_path, trust_remote_code=False)
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    return int(text.max_position_embeddings)
