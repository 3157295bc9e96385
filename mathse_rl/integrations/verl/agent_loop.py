"""The ``mathse_reflect`` agent loop: solve, judge, reflect on a wrong answer, re-judge.

One rollout sample, MathSE's online form:

1. the rollout server answers the dataset prompt (images included);
2. the answer is judged: by the rule verifier against ``reward_model.ground_truth``
   (``judge: verifier``), or by the ORM (``judge: orm``, :func:`mathse_rl.orm.load_judge`),
   which also says where the solution went wrong and why. The verdict is tri-state: correct,
   wrong, or ``None`` (undecidable: no gold, verifier timeout, judge failure), which is counted
   and never accepted. The judge runs off the event loop (the verifier in a thread, ORM calls
   of concurrent samples batched for a few ms), so it never stalls the other rollouts;
3. a wrong answer with a gold is turned into the reflection prompt (question, images, the wrong
   solution, the error step and analysis) and the same server writes a refinement, which is
   judged again; up to ``max_attempts`` refinements, stopping at the first verified one.

Token budget. Every reflection request carries an explicit ``max_tokens`` (default: the
rollout's ``response_length``). Without it verl's servers grant
``min(response_length, prompt_length + response_length - len(prompt))`` new tokens, and a
reflection prompt is longer than the dataset prompt: the refinement would be cut to a few
tokens. Before sending, the prompt is checked against what the engine will actually grant
(:mod:`mathse_rl.integrations.verl.budget`, the rule of verl's vLLM / SGLang servers): a prompt
that leaves less than ``max_tokens`` is skipped and counted (``reflect_too_long``). A
refinement that stops without an end-of-sequence token at its budget is truncated
(``reflect_truncated``): never verified, never kept.

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
  multimodal inputs, which verl computes per output.
- ``replace``: the previous behaviour: the refinement takes the sample's place under the
  original prompt (verified, or with ``keep_failed_refinement`` a failed but complete one).

Every output carries the same extra fields (``EXTRA_FIELDS``): ``accepted`` (the judge's
verdict on *this* output: 1.0, 0.0, or None = undecidable), ``first_correct``, ``is_refined``,
``refine_verified``, ``refine_attempts``, ``reflect_too_long``, ``reflect_truncated``,
``reflect_errors``, ``judge_error`` and ``mathse_role``. The ``mathse`` trainer accepts
``mathse_rft`` samples on ``accepted`` (never on a summed or shaped reward) and reduces the
fields into logged metrics (``mathse/*``, per data source too). A reflection request that
raises is counted in ``reflect_errors``; the group goes on.

Options (:class:`ReflectConfig`) come from the trainer config section ``mathse.reflect``
(``+mathse.reflect.max_attempts=2`` on a plain verl command line, no ``+`` with our recipes)
and, above that, from keyword arguments in a verl agent-loop config file
(``rollout.agent.agent_loop_config_path``). Select the loop for every row with
``actor_rollout_ref.rollout.agent.default_agent_loop=mathse_reflect``.
"""

from __future__ import annotations

import functools
import json
import logging
import warnings
from dataclasses import dataclass, field, fields, replace
from typing import Any, Awaitable, Callable, Mapping, Sequence
from uuid import uuid4

from verl.experimental.agent_loop.agent_loop import AgentLoopBase, AgentLoopOutput, register
from verl.utils.profiler import simple_timer
from verl.workers.rollout.replica import TokenOutput

from mathse_rl.prompts import REFLECT_TEMPLATES, build_reflect_messages
from mathse_rl.integrations.verl.batching import MicroBatcher
from mathse_rl.integrations.verl.budget import granted_tokens, rule_for
from mathse_rl.types import Judgment, Problem, RewardInput, Verdict

logger = logging.getLogger(__name__)

NAME = "mathse_reflect"
# Trainer-config section holding the loop's options.
CONFIG_SECTION = ("mathse", "reflect")
# Extra fields every output of this loop carries (same keys on every output, so verl can stack them).
EXTRA_FIELDS = ("accepted", "first_correct", "is_refined", "refine_verified", "refine_attempts",
                "reflect_too_long", "reflect_truncated", "reflect_errors", "judge_error", "mathse_role")
# What a returned output is: the policy's own sample, or a refinement added beside it.
ROLE_POLICY, ROLE_REFINEMENT = "policy", "refinement"
MODES = ("add", "replace")
# Renamed options: old spelling -> new spelling (the old one still works, with a warning).
DEPRECATED = {"enable": "enabled"}
# Verifier outcomes that decide nothing (counted as undecidable, never as wrong).
UNDECIDABLE_REASONS = ("no_gold", "timeout")


@dataclass(frozen=True)
class ReflectConfig:
    """Options of the ``mathse_reflect`` agent loop (trainer config ``mathse.reflect.*``)."""

    enabled: bool = True  # reflect on wrong first answers; False = judge only (plain single-turn rollout)
    mode: str = "add"  # "add": verified refinement returned beside the policy's sample; "replace": in its place
    max_attempts: int = 1  # refinements tried per wrong answer; stops at the first verified one
    judge: str = "verifier"  # who judges answers: "verifier" (rule check vs ground truth) or "orm"
    orm: dict[str, Any] = field(default_factory=dict)  # judge: orm -> mathse_rl.orm JudgeConfig fields
    template: str = "paper"  # reflection prompt: a name in mathse_rl.prompts.REFLECT_TEMPLATES or a format string
    keep_failed_refinement: bool = False  # replace mode: return a complete unverified refinement too
    max_tokens: int = 0  # new tokens each reflection request asks for; 0 = rollout.response_length
    max_prompt_length: int = 0  # longest reflection prompt in tokens; 0 = what leaves the server room for max_tokens
    min_refinement_tokens: int = 2  # a refinement shorter than this is never kept in place of a sample
    judge_batch_window_s: float = 0.005  # ORM calls of concurrent samples arriving this close are batched
    judge_max_batch: int = 64  # most samples in one ORM call
    verify_timeout: float = 5.0  # seconds the rule verifier may spend on one answer (then: undecidable)

    def __post_init__(self) -> None:
        if self.judge not in JUDGES:
            raise ValueError(f"mathse.reflect.judge must be one of {sorted(JUDGES)}, got {self.judge!r}")
        if self.mode not in MODES:
            raise ValueError(f"mathse.reflect.mode must be one of {list(MODES)}, got {self.mode!r}")
        for name in ("max_prompt_length", "max_tokens"):
            if getattr(self, name) < 0:
                raise ValueError(f"mathse.reflect.{name} must be >= 0, got {getattr(self, name)}")
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
        for old, new in DEPRECATED.items():
            if old in values:
                warnings.warn(f"mathse.reflect.{old} is deprecated; use mathse.reflect.{new}", DeprecationWarning,
                              stacklevel=2)
                values.setdefault(new, values.pop(old))
                values.pop(old, None)
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
# judging: name -> async (loop config, problem, response) -> (verdict or None, critique or None)
# ---------------------------------------------------------------------------------------------
JudgeFn = Callable[[ReflectConfig, Problem, str], Awaitable[tuple[bool | None, Judgment | None]]]
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


async def rule_verdict(problem: Problem, response: str, timeout: float = 5.0) -> Verdict:
    """The rule verifier's verdict, computed in a thread (a symbolic check may take its timeout)."""
    from mathse_rl.verify import averify  # lazy: the verifier is only needed once a loop runs

    if problem.gold is None:
        return Verdict(correct=False, pred=None, reason="no_gold")
    return await averify(response, problem.gold, choices=problem.choices, timeout=timeout)


@register_judge("verifier")
async def judge_with_verifier(cfg: ReflectConfig, problem: Problem, response: str
                              ) -> tuple[bool | None, Judgment | None]:
    verdict = await rule_verdict(problem, response, cfg.verify_timeout)
    if verdict.reason in UNDECIDABLE_REASONS:
        return None, None
    return verdict.correct, (None if verdict.correct else verdict_critique(verdict))


@functools.lru_cache(maxsize=4)
def _orm_judge(config_json: str) -> Any:
    # One judge per distinct config and process: verl builds a new loop object per sample.
    from mathse_rl.orm import load_judge

    return load_judge(json.loads(config_json))


_orm_batchers: dict[tuple[str, int], MicroBatcher] = {}


def _orm_batcher(cfg: ReflectConfig) -> MicroBatcher:
    """One batcher per ORM config and event loop: concurrent samples share one ``ajudge`` call."""
    import asyncio

    key = (json.dumps(cfg.orm, sort_keys=True), id(asyncio.get_running_loop()))
    batcher = _orm_batchers.get(key)
    if batcher is None:
        judge = _orm_judge(key[0])
        batcher = _orm_batchers[key] = MicroBatcher(judge.ajudge, cfg.judge_max_batch, cfg.judge_batch_window_s)
    return batcher


@register_judge("orm")
async def judge_with_orm(cfg: ReflectConfig, problem: Problem, response: str) -> tuple[bool | None, Judgment | None]:
    item = RewardInput(question=problem.question, response=response, gold=problem.gold, choices=problem.choices,
                       images=problem.images, data_source=problem.data_source)
    judgment = await _orm_batcher(cfg).submit(item)
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


def _score(verdict: bool | None) -> float | None:
    return None if verdict is None else float(bool(verdict))


@register(NAME)
class MathSEReflectAgentLoop(AgentLoopBase):
    """Single-turn rollout plus MathSE's judge → reflect → re-judge on wrong answers."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        options = {k: kwargs.pop(k) for k in list(kwargs)
                   if k in {f.name for f in fields(ReflectConfig)} | set(DEPRECATED)}
        super().__init__(*args, **kwargs)
        self.reflect_config = ReflectConfig.resolve(self.config, options)
        self.response_length = int(self.rollout_config.response_length)
        self.reflect_max_tokens = int(self.reflect_config.max_tokens or self.response_length)
        self.budget_rule = rule_for(str(self.rollout_config.get("name", "vllm")),
                                    _plain(self.rollout_config.get("engine_kwargs", None)))
        self.max_model_len = self._max_model_len()
        self.reflect_prompt_limit = self._reflect_prompt_limit()
        self.eos_ids = _eos_ids(self.tokenizer)

    def _max_model_len(self) -> int:
        """The server's context: ``rollout.max_model_len``, or (as verl's servers do when it is
        unset) the model's ``max_position_embeddings``."""
        value = self.rollout_config.get("max_model_len", None)
        if value:
            return int(value)
        return _max_position_embeddings(str(self.config.actor_rollout_ref.model.path))

    def _reflect_prompt_limit(self) -> int:
        """Longest reflection prompt that the server grants the full ``max_tokens`` (or the
        user's ``max_prompt_length`` when lower)."""
        limit = self.max_model_len - self.reflect_max_tokens - (1 if self.budget_rule == "sglang" else 0)
        if self.reflect_config.max_prompt_length:
            limit = min(limit, self.reflect_config.max_prompt_length)
        return limit

    def granted(self, prompt_len: int) -> int:
        """New tokens the server grants a reflection prompt of ``prompt_len`` tokens (0: refused)."""
        if prompt_len > self.reflect_prompt_limit:
            return 0
        try:
            return granted_tokens(self.budget_rule, prompt_len, self.reflect_max_tokens,
                                  prompt_length=int(self.rollout_config.prompt_length),
                                  response_length=self.response_length, max_model_len=self.max_model_len)
        except ValueError:
            return 0

    async def run(self, sampling_params: dict[str, Any], priority: int = 0, **kwargs: Any
                  ) -> AgentLoopOutput | list[AgentLoopOutput]:
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
        extra: dict[str, Any] = dict.fromkeys(EXTRA_FIELDS, False)
        extra.update(refine_attempts=0, reflect_errors=0, mathse_role=ROLE_POLICY, accepted=None,
                     first_correct=None)
        problem, from_extra = problem_from_row(kwargs, images or ())
        first_text = self._decode(first)
        judge = _guarded(JUDGES[cfg.judge], extra, problem.id)
        correct, judgment = await judge(cfg, problem, first_text)
        extra["first_correct"] = correct
        extra["accepted"] = _score(correct)

        refinement: TokenOutput | None = None  # the refinement returned (replace) or added (add)
        refined_verdict: bool | None = None
        if cfg.enabled and correct is False and problem.gold is not None:
            wrong = first_text
            for attempt in range(1, cfg.max_attempts + 1):
                reflect_msgs = reflection_messages(messages, problem, from_extra, wrong, judgment, cfg.template)
                reflect_ids = await self._reflection_tokens(reflect_msgs, images, videos)
                budget = self.granted(len(reflect_ids))
                if budget < self.reflect_max_tokens:  # the server would cut the refinement short
                    extra["reflect_too_long"] = True
                    break
                params = dict(sampling_params, max_tokens=self.reflect_max_tokens)
                try:
                    with simple_timer("generate_sequences", metrics):
                        refined = await self._generate(reflect_ids, params, images, videos, mm_processor_kwargs,
                                                       priority)
                except Exception as exc:  # one failed request must not fail the group
                    extra["reflect_errors"] += 1
                    logger.warning("mathse_reflect: reflection for sample %s failed: %s: %s", problem.id,
                                   type(exc).__name__, exc)
                    break
                extra["refine_attempts"] = attempt
                if self._truncated(refined, min(budget, self.response_length)):
                    extra["reflect_truncated"] = True  # never verified, never kept
                    wrong = self._decode(refined)
                    continue
                refined_text = self._decode(refined)
                verified, judgment = await judge(cfg, problem, refined_text)
                if verified:
                    refinement, refined_verdict = refined, True
                    extra["refine_verified"] = True
                    break
                if (cfg.mode == "replace" and cfg.keep_failed_refinement and verified is False
                        and len(refined.token_ids) >= cfg.min_refinement_tokens):
                    refinement, refined_verdict = refined, False
                wrong = refined_text
        metrics["num_preempted"] = first.num_preempted if first.num_preempted is not None else -1
        extra["is_refined"] = refinement is not None
        num_turns = 2 + 2 * int(extra["refine_attempts"])  # user, assistant, then a pair per reflection
        if refinement is None:
            return await self._as_output(prompt_ids, first, multi_modal_data, mm_processor_kwargs, metrics, extra,
                                         num_turns)
        refined_extra = dict(extra, accepted=_score(refined_verdict), mathse_role=ROLE_REFINEMENT)
        refined_out = await self._as_output(prompt_ids, refinement, multi_modal_data, mm_processor_kwargs,
                                            dict(metrics), refined_extra, num_turns)
        if cfg.mode == "replace":
            return refined_out
        # add: the policy's own answer comes last, so verl's per-session bookkeeping (rewards,
        # GRPO's group statistics) is that of the on-policy sample.
        policy_out = await self._as_output(prompt_ids, first, multi_modal_data, mm_processor_kwargs, metrics,
                                           extra, num_turns)
        return [refined_out, policy_out]

    def _truncated(self, output: TokenOutput, budget: int) -> bool:
        ids = list(output.token_ids)
        if output.stop_reason in ("aborted", "length"):
            return True
        return len(ids) >= budget and (not ids or ids[-1] not in self.eos_ids) or not ids

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
            multi_modal_data=multi_modal_data,
            mm_processor_kwargs=mm_processor_kwargs,
            num_turns=num_turns,
            metrics=metrics,
            extra_fields=extra_fields,
        )


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


def _guarded(judge: JudgeFn, extra: dict[str, Any], sample_id: str) -> JudgeFn:
    """A judge that never raises: a failure is an undecidable verdict (``None``), flagged in the
    sample's ``judge_error`` field and logged with the sample's id; the rollout goes on."""

    async def call(cfg: ReflectConfig, problem: Problem, response: str) -> tuple[bool | None, Judgment | None]:
        try:
            return await judge(cfg, problem, response)
        except Exception as exc:  # one bad sample must not end the step
            extra["judge_error"] = True
            logger.warning("mathse_reflect: judging sample %s failed: %s: %s", sample_id, type(exc).__name__, exc)
            return None, None

    return call
