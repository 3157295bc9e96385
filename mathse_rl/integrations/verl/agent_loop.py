"""The ``mathse_reflect`` agent loop: solve, judge, reflect on a wrong answer, re-judge.

One rollout sample, MathSE's online form:

1. the rollout server answers the dataset prompt (images included);
2. the answer is judged: by the rule verifier against ``reward_model.ground_truth``
   (``judge: verifier``), or by the ORM (``judge: orm``, :func:`mathse_rl.orm.load_judge`),
   which also says where the solution went wrong and why;
3. a wrong answer is turned into the reflection prompt (the paper's template: question,
   images, the wrong solution, the error step and analysis) and the same server writes a
   refinement, which is judged again; up to ``max_attempts`` refinements, stopping at the
   first verified one;
4. the sample returned to verl is the refinement as the response to the **original** prompt
   (prompt ids, images and hence position ids are those of the dataset prompt), so the
   policy learns to answer the question directly; extra fields ``is_refined``,
   ``refine_verified``, ``first_correct`` and ``refine_attempts`` travel with it into verl's
   batch for rewards, advantages and metrics. ``num_turns`` counts the reflection turns
   (2 + 2 per refinement attempt), so verl's own ``num_turns/mean`` and ``num_turns/max``
   metrics show how much reflection a step did.

A correct first answer (or any answer when reflection is off) is returned unchanged, exactly
as verl's single-turn loop would return it.

Rollout log-probs (``rollout.calculate_log_probs``) of a refined sample are the server's, taken
under the reflection prompt: they measure how the critique shifted the policy, so verl's
``training/rollout_probs_diff_*`` metrics grow with reflection, and ``algorithm.rollout_correction``
weights refinements by the ratio of the two contexts. The recipes leave them off.

Options (:class:`ReflectConfig`) come from the trainer config section ``mathse.reflect``
(``+mathse.reflect.max_attempts=2`` on a plain verl command line, no ``+`` with our recipes) and, above that, from keyword
arguments in a verl agent-loop config file (``rollout.agent.agent_loop_config_path``).
Select the loop for every row with ``actor_rollout_ref.rollout.agent.default_agent_loop=mathse_reflect``.
"""

from __future__ import annotations

import functools
import json
import logging
from dataclasses import dataclass, field, fields
from typing import Any, Awaitable, Callable, Mapping, Sequence
from uuid import uuid4

from verl.experimental.agent_loop.agent_loop import AgentLoopBase, AgentLoopOutput, register
from verl.utils.profiler import simple_timer
from verl.workers.rollout.replica import TokenOutput

from mathse_rl.prompts import REFLECT_TEMPLATES, build_reflect_messages
from mathse_rl.types import Judgment, Problem, RewardInput, Verdict

logger = logging.getLogger(__name__)

NAME = "mathse_reflect"
# Trainer-config section holding the loop's options.
CONFIG_SECTION = ("mathse", "reflect")
# Extra fields every sample of this loop carries (same keys on every sample, so verl can stack them).
EXTRA_FIELDS = ("is_refined", "refine_verified", "first_correct", "refine_attempts", "reflect_too_long",
                "judge_error")


@dataclass(frozen=True)
class ReflectConfig:
    """Options of the ``mathse_reflect`` agent loop (trainer config ``mathse.reflect.*``)."""

    enable: bool = True  # reflect on wrong first answers; False = plain single-turn rollout
    max_attempts: int = 1  # refinements tried per wrong answer; stops at the first verified one
    judge: str = "verifier"  # who judges answers: "verifier" (rule check vs ground truth) or "orm"
    orm: dict[str, Any] = field(default_factory=dict)  # judge: orm -> mathse_rl.orm JudgeConfig fields
    template: str = "paper"  # reflection prompt: a name in mathse_rl.prompts.REFLECT_TEMPLATES or a format string
    keep_failed_refinement: bool = True  # no verified refinement: return the last one (False: the first answer)
    max_prompt_length: int = 0  # longest reflection prompt in tokens; 0 = rollout.max_model_len - response_length

    def __post_init__(self) -> None:
        if self.judge not in JUDGES:
            raise ValueError(f"mathse.reflect.judge must be one of {sorted(JUDGES)}, got {self.judge!r}")
        if self.max_prompt_length < 0:
            raise ValueError(f"mathse.reflect.max_prompt_length must be >= 0, got {self.max_prompt_length}")
        if self.max_attempts < 1:
            raise ValueError(f"mathse.reflect.max_attempts must be >= 1, got {self.max_attempts}")
        if self.template not in REFLECT_TEMPLATES and "{wrong_solution}" not in self.template:
            raise ValueError(
                f"mathse.reflect.template must be one of {sorted(REFLECT_TEMPLATES)} or a format string "
                f"with {{wrong_solution}}, got {self.template!r}"
            )

    @classmethod
    def resolve(cls, trainer_config: Any, overrides: Mapping[str, Any]) -> "ReflectConfig":
        """Defaults, then the trainer config's ``mathse.reflect`` section, then ``overrides``."""
        values: dict[str, Any] = {}
        section: Any = trainer_config
        for key in CONFIG_SECTION:
            section = section.get(key) if section is not None and hasattr(section, "get") else None
        if section is not None:
            values.update(_plain(section))
        values.update(_plain(overrides))
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown mathse.reflect option(s) {unknown}; known: {sorted(known)}")
        return cls(**values)


def _plain(mapping: Any) -> dict[str, Any]:
    try:
        from omegaconf import DictConfig, OmegaConf

        if isinstance(mapping, DictConfig):
            return dict(OmegaConf.to_container(mapping, resolve=True))  # type: ignore[arg-type]
    except ImportError:  # pragma: no cover - omegaconf is a core dependency
        pass
    return dict(mapping or {})


# ---------------------------------------------------------------------------------------------
# judging: name -> async (loop config, problem, response) -> (correct, judgment or None)
# ---------------------------------------------------------------------------------------------
JudgeFn = Callable[[ReflectConfig, Problem, str], Awaitable[tuple[bool, Judgment | None]]]
JUDGES: dict[str, JudgeFn] = {}


def register_judge(name: str) -> Callable[[JudgeFn], JudgeFn]:
    def decorator(fn: JudgeFn) -> JudgeFn:
        JUDGES[name] = fn
        return fn

    return decorator


def verdict_critique(verdict: Verdict) -> Judgment:
    """A critique of a wrong answer from the rule verifier alone (it never reveals the gold)."""
    if verdict.reason == "no_answer":
        analysis = "The solution never states its final answer in the required closing sentence."
    elif verdict.pred:
        analysis = f"The final answer {verdict.pred} is not correct; an earlier step must contain the mistake."
    else:
        analysis = f"The final answer could not be accepted ({verdict.reason})."
    return Judgment(status="WRONG", error_step_text="the final answer (the exact step is unknown)",
                    error_analysis=analysis)


def rule_verdict(problem: Problem, response: str) -> Verdict:
    from mathse_rl.verify import verify  # lazy: the verifier is only needed once a loop runs

    if problem.gold is None:
        return Verdict(correct=False, pred=None, reason="no_gold")
    return verify(response, problem.gold, choices=problem.choices)


@register_judge("verifier")
async def judge_with_verifier(cfg: ReflectConfig, problem: Problem, response: str) -> tuple[bool, Judgment | None]:
    verdict = rule_verdict(problem, response)
    return verdict.correct, (None if verdict.correct else verdict_critique(verdict))


@functools.lru_cache(maxsize=4)
def _orm_judge(config_json: str) -> Any:
    # One judge per distinct config and process: verl builds a new loop object per sample.
    from mathse_rl.orm import load_judge

    return load_judge(json.loads(config_json))


@register_judge("orm")
async def judge_with_orm(cfg: ReflectConfig, problem: Problem, response: str) -> tuple[bool, Judgment | None]:
    judge = _orm_judge(json.dumps(cfg.orm, sort_keys=True))
    item = RewardInput(question=problem.question, response=response, gold=problem.gold, choices=problem.choices,
                       images=problem.images, data_source=problem.data_source)
    (judgment,) = await judge.ajudge([item])
    if judgment is None:  # the judge failed and its fallback is "none": use the rule verifier
        return await judge_with_verifier(cfg, problem, response)
    return judgment.correct, judgment


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


def reflection_messages(original: Sequence[Mapping[str, Any]], problem: Problem, question_has_options: bool,
                        wrong: str, judgment: Judgment | None, template: str) -> list[dict[str, Any]]:
    """The reflection turn (images attached to its image parts), after the original system turns."""
    prompt_problem = problem if question_has_options else Problem(
        id=problem.id, question=problem.question, gold=problem.gold, images=problem.images, choices=None)
    messages = build_reflect_messages(prompt_problem, wrong, judgment, template=template)
    images = iter(problem.images)
    for message in messages:
        if isinstance(message["content"], list):
            message["content"] = [dict(p, image=next(images)) if p.get("type") == "image" else p
                                  for p in message["content"]]
    system = [dict(m) for m in original if m.get("role") == "system"]
    return system + messages


@register(NAME)
class MathSEReflectAgentLoop(AgentLoopBase):
    """Single-turn rollout plus MathSE's judge → reflect → re-judge on wrong answers."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        options = {k: kwargs.pop(k) for k in list(kwargs) if k in {f.name for f in fields(ReflectConfig)}}
        super().__init__(*args, **kwargs)
        self.reflect_config = ReflectConfig.resolve(self.config, options)
        self.response_length = self.rollout_config.response_length
        self.reflect_prompt_limit = self._reflect_prompt_limit()

    def _reflect_prompt_limit(self) -> int:
        """Reflection prompts (question + wrong solution + critique) are longer than dataset
        prompts and never enter the batch, so verl's ``prompt_length`` cap does not apply; the
        server's context (``rollout.max_model_len``) minus a full response is the limit."""
        if self.reflect_config.max_prompt_length:
            return self.reflect_config.max_prompt_length
        max_model_len = self.rollout_config.get("max_model_len", None)
        if not max_model_len:
            _warn_once("actor_rollout_ref.rollout.max_model_len is unset: reflection prompts longer than "
                       "rollout.prompt_length are skipped; set it to about prompt_length + 2 * response_length "
                       "+ 512 (or set mathse.reflect.max_prompt_length)")
            return int(self.rollout_config.prompt_length)
        return int(max_model_len) - int(self.response_length)

    async def run(self, sampling_params: dict[str, Any], priority: int = 0, **kwargs: Any) -> AgentLoopOutput:
        cfg = self.reflect_config
        priority = int(priority)
        messages = list(kwargs["raw_prompt"])
        multi_modal_data = await self.process_multi_modal_info(messages)
        images = multi_modal_data.get("images")
        videos = multi_modal_data.get("videos")
        mm_processor_kwargs = self._get_mm_processor_kwargs(multi_modal_data.get("audios"))
        self._assert_mm_supported(bool(multi_modal_data))
        prompt_ids = await self.ct_build_initial_tokens(messages, images=images, videos=videos)

        metrics: dict[str, Any] = {}
        with simple_timer("generate_sequences", metrics):
            first = await self._generate(prompt_ids, sampling_params, images, videos, mm_processor_kwargs, priority)
        extra = dict.fromkeys(EXTRA_FIELDS, False)
        extra["refine_attempts"] = 0
        chosen = first
        if cfg.enable:
            problem, from_extra = problem_from_row(kwargs, images or ())
            first_text = self._decode(first)
            judge = _guarded(JUDGES[cfg.judge], extra, problem.id)
            correct, judgment = await judge(cfg, problem, first_text)
            extra["first_correct"] = bool(correct)
            if not correct and problem.gold is not None and not extra["judge_error"]:
                wrong = first_text
                for attempt in range(1, cfg.max_attempts + 1):
                    reflect_msgs = reflection_messages(messages, problem, from_extra, wrong, judgment, cfg.template)
                    reflect_ids = await self._reflection_tokens(reflect_msgs, images, videos)
                    if len(reflect_ids) > self.reflect_prompt_limit:  # counted in the batch, never fatal
                        extra["reflect_too_long"] = True
                        break
                    with simple_timer("generate_sequences", metrics):
                        refined = await self._generate(reflect_ids, sampling_params, images, videos,
                                                       mm_processor_kwargs, priority)
                    refined_text = self._decode(refined)
                    verified, judgment = await judge(cfg, problem, refined_text)
                    extra["refine_attempts"] = attempt
                    if verified or cfg.keep_failed_refinement:
                        chosen = refined
                        extra["is_refined"] = True
                        extra["refine_verified"] = bool(verified)
                    if verified:
                        break
                    wrong = refined_text
        metrics["num_preempted"] = first.num_preempted if first.num_preempted is not None else -1
        return await self._as_output(prompt_ids, chosen, multi_modal_data, mm_processor_kwargs, metrics, extra)

    async def _reflection_tokens(self, messages: list[dict[str, Any]], images: Any, videos: Any) -> list[int]:
        # The builder directly: ct_build_initial_tokens would reject a prompt over prompt_length.
        return await self.loop.run_in_executor(
            None, lambda: self.continuous_token_builder.build_initial_tokens(messages, images=images, videos=videos)
        )

    async def _generate(self, prompt_ids: list[int], sampling_params: dict[str, Any], images: Any, videos: Any,
                        mm_processor_kwargs: dict[str, Any], priority: int) -> TokenOutput:
        return await self.server_manager.generate(
            request_id=uuid4().hex,
            prompt_ids=prompt_ids,
            sampling_params=sampling_params,
            image_data=images,
            video_data=videos,
            mm_processor_kwargs=mm_processor_kwargs,
            priority=priority,
        )

    def _decode(self, output: TokenOutput) -> str:
        return self.tokenizer.decode(output.token_ids[: self.response_length], skip_special_tokens=True)

    async def _as_output(self, prompt_ids: list[int], output: TokenOutput, multi_modal_data: dict[str, Any],
                         mm_processor_kwargs: dict[str, Any], metrics: dict[str, Any],
                         extra: dict[str, Any]) -> AgentLoopOutput:
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
            multi_modal_data=multi_modal_data,
            mm_processor_kwargs=mm_processor_kwargs,
            num_turns=2 + 2 * int(extra["refine_attempts"]),  # user, assistant, then a pair per reflection
            metrics=metrics,
            extra_fields=extra_fields,
        )


def _guarded(judge: JudgeFn, extra: dict[str, Any], sample_id: str) -> JudgeFn:
    """A judge that never raises: a failure counts as "not verified", is flagged in the
    sample's ``judge_error`` field and logged with the sample's id; the rollout goes on."""

    async def call(cfg: ReflectConfig, problem: Problem, response: str) -> tuple[bool, Judgment | None]:
        try:
            return await judge(cfg, problem, response)
        except Exception as exc:  # one bad sample must not end the step
            extra["judge_error"] = True
            logger.warning("mathse_reflect: judging sample %s failed: %s: %s", sample_id, type(exc).__name__, exc)
            return False, None

    return call


@functools.lru_cache(maxsize=None)
def _warn_once(message: str) -> None:
    logger.warning("mathse_reflect: %s", message)

