"""The MathSE step, once for every trainer: judge → critique → reflect → re-judge → accept.

The offline loop (:mod:`mathse_rl.evolve`), trl's ``MathSETrainer`` and verl's
``mathse_reflect`` agent loop convert their batches to and from these calls; none of them
judges, critiques or reflects on its own. Nothing here imports a framework.

    >>> from mathse_rl.types import Problem
    >>> judge = Judge(StepConfig(judge="verifier+format"))
    >>> p = Problem(id="q", question="2 + 3?", gold="5")
    >>> [v.correct for v in judge.judge([p, p], ["The answer to this problem is 5.",
    ...                                          "The answer to this problem is 6."])]
    [True, False]

**Acceptance** is decided on the judge's *verdict*, never on a summed or shaped reward. The
judge is a reward name (``judge:``); the components that decide correctness are the
verifier (its verdict), the ORM rewards (the judgment's status) and any reward whose class
says ``decides_correctness = True``. The rule:

* a single reward name decides by its verdict (a custom reward with no verdict of its own:
  ``score >= threshold``);
* in a composite (``verifier+format``, ``0.9*verifier+0.1*format``) only the deciding parts
  decide, whatever the weights: correct when every deciding part says correct, wrong when
  any says wrong, undecidable otherwise. Shaping parts (``format``) never accept a path, so a
  wrong answer in the right format is wrong. A composite with no deciding part is refused
  when the judge is built.

**Undecidable** (no or unreadable gold, verifier timeout, judge failure) is ``correct=None``:
counted, never accepted. By default it is left out of training and never reflected on; with
``undecidable_as_wrong: true`` it is treated exactly as a wrong path (:meth:`Judge.trains_as_wrong`):
rewarded 0.0, and reflected on where its gold is usable (:meth:`Judge.reflects_on`).

**One verdict per path.** The reward a trainer trains a path with is derived from the same
judgment (:meth:`Judge.reward_of`): the judge reward's score of a decided path (the verifier: 1.0
accepted, 0.0 rejected), and for an undecidable one None (left out) or, with
``undecidable_as_wrong``, 0.0. The critic starts from that verdict (:func:`critique` hands it to
the critic; a critique calling a rejected path CORRECT is replaced by the rule critique of the
verdict and counted, ``critic_disagreed``). A reward configured beside the judge must agree with
it: :func:`verdict_mismatches` names what differs, and the trainers refuse to start on it.

**Reflection** goes through the caller's generate function with an explicit token budget
(:class:`TokenBudget`): every request carries ``max_tokens``; a reflection prompt that does
not leave ``max_tokens`` within the engine's context is skipped and counted
(``reflect_too_long``); a refinement that stopped on its token limit is ``truncated`` and
never accepted; an exception from the engine is counted (``generate_errors``), never raised.

    >>> def generate(requests):                     # the engine: one Generation (or str) per request
    ...     return [Generation("The answer to this problem is 5.", "stop", 8) for r in requests]
    >>> wrong = "The answer to this problem is 6."
    >>> counters = StepCounters()
    >>> verdicts = judge.judge([p], [wrong], counters=counters)
    >>> items = [ReflectItem(p, wrong, c) for c in critique(Critic(), [p], [wrong], counters=counters)]
    >>> [o.status for o in reflect_and_rejudge(judge, items, generate, TokenBudget(max_tokens=64),
    ...                                        counters=counters)]
    ['verified']
    >>> counters.as_metrics()["mathse/refine_verified"]
    1.0
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Mapping, Optional, Sequence, Union

from mathse_rl.batching import MicroBatcher
from mathse_rl.prompts import REFLECT_TEMPLATES, build_reflect_messages
from mathse_rl.types import UNDECIDABLE_REASONS as _UNDECIDABLE_REASONS
from mathse_rl.types import Judgment, Problem, RewardInput, RewardOutput

logger = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- configuration
@dataclass
class ReflectOptions:
    """``reflect:`` of :class:`StepConfig` (trl ``mathse.reflect``, verl ``mathse.reflect``, evolve ``reflect``)."""

    enabled: bool = True  # refine paths judged wrong with the reflection prompt
    template: str = "paper"  # reflection prompt: a name in mathse_rl.prompts.REFLECT_TEMPLATES or a format string
    attempts: int = 1  # refinements tried per wrong path, stopping at the first verified one
    temperature: Optional[float] = None  # sampling temperature of refinements (None: the engine's rollout setting)
    max_tokens: Optional[int] = None  # new tokens per refinement (None: the rollout's response length)


@dataclass
class StepConfig:
    """The step's one vocabulary, read alike by trl, verl and the offline loop."""

    judge: str = "verifier"  # reward name that decides correctness: verifier | orm | orm_gated | composites
    judge_options: dict[str, Any] = field(default_factory=dict)  # judge reward options (orm*: empty = critic's)
    critic: dict[str, Any] = field(default_factory=lambda: {"backend": "verifier"})  # orm.load_judge config
    reflect: ReflectOptions = field(default_factory=ReflectOptions)  # reflection on wrong paths
    undecidable_as_wrong: bool = False  # train undecidable paths (no gold, timeout, judge failure) as wrong
    require_final_answer: bool = True  # the verifier judge accepts only a stated final answer (strict extraction)
    threshold: float = 0.5  # a custom reward with no verdict of its own decides correct at score >= this
    batch_window_ms: float = 2.0  # ajudge_one: how long concurrent single-path calls wait to share a batch
    max_batch: int = 64  # ajudge_one: paths judged per batched call at most


def step_config(config: Any = None, **overrides: Any) -> StepConfig:
    """A :class:`StepConfig` from None, a StepConfig, a mapping or an OmegaConf node, plus field overrides.

    Unknown keys fail here, before any work starts.

        >>> step_config({"judge": "orm", "reflect": {"attempts": 2}}).reflect.attempts
        2
    """
    from omegaconf import OmegaConf

    base = OmegaConf.structured(StepConfig)
    if isinstance(config, StepConfig):
        config = dataclasses.asdict(config)
    if config is not None:
        base = OmegaConf.merge(base, config if not isinstance(config, Mapping) else OmegaConf.create(dict(config)))
    for key, value in overrides.items():  # an option mapping is replaced whole (judge_options={} empties it)
        OmegaConf.update(base, key, value, merge=key == "reflect")
    cfg: StepConfig = OmegaConf.to_object(base)  # type: ignore[assignment]
    r = cfg.reflect
    if r.attempts < 1:
        raise ValueError(f"reflect.attempts must be >= 1, got {r.attempts}")
    if r.max_tokens is not None and r.max_tokens < 1:
        raise ValueError(f"reflect.max_tokens must be >= 1 or null, got {r.max_tokens}")
    if r.template not in REFLECT_TEMPLATES and "{wrong_solution}" not in r.template:
        raise ValueError(f"reflect.template must be one of {sorted(REFLECT_TEMPLATES)} or a format string with "
                         f"{{wrong_solution}}, got {r.template!r}")
    return cfg


def judge_reward_options(config: StepConfig) -> dict[str, Any]:
    """Options for the judge reward: ``judge_options``, else (an ORM judge) the critic's ORM config;
    plus the verifier's ``strict`` (``require_final_answer``: only a stated final answer is accepted).

    The paper's ORM both judges and critiques, so ``judge: orm`` with ``critic: {backend: local,
    model: ...}`` judges with that same model unless ``judge_options`` says otherwise.

        >>> judge_reward_options(StepConfig(judge="orm", critic={"backend": "local", "model": "m"}))
        {'backend': 'local', 'model': 'm'}
        >>> judge_reward_options(StepConfig(judge="verifier+format"))["verifier"]
        {'strict': True}
    """
    options = dict(config.judge_options) if config.judge_options else (
        dict(config.critic) if uses_orm(config.judge) else {})
    if "verifier" in _part_names(config.judge):
        strict = {"strict": bool(config.require_final_answer)}
        if config.judge.strip() == "verifier":
            options = {**strict, **options}
        else:
            mine = options.get("verifier")
            options["verifier"] = {**strict, **(dict(mine) if isinstance(mine, Mapping) else {})}
    return options


def uses_orm(spec: str) -> bool:
    """Whether the judge spec names an ORM reward (``orm``, ``orm_gated``, ``verifier+orm``; not ``format``)."""
    return spec.strip() in DECIDING_REWARDS - {"verifier"} or any(n.startswith("orm") for n in _part_names(spec))


def _part_names(spec: str) -> list[str]:
    from mathse_rl.rewards.registry import parse_spec

    try:
        return [name for name, _ in parse_spec(spec)]
    except ValueError:
        return [spec]


# ----------------------------------------------------------------------------- records
@dataclass(frozen=True)
class PathVerdict:
    """The judge's tri-state verdict on one path.

    ``correct`` is True / False / None (undecidable); ``reason`` says why (``correct``,
    ``wrong``, ``no_gold``, ``timeout``, ``judge_error``, a verifier reason such as
    ``mismatch``); ``score`` is the judge reward's score, logged only (it never decides);
    ``judgment`` is an ORM judge's own judgment (its critique of a wrong path).
    """

    correct: Optional[bool]
    reason: str
    score: Optional[float] = None
    judgment: Optional[Judgment] = None
    judge_error: bool = False  # the judge failed on this path (its fallback may still have decided)
    extras: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Generation:
    """What an engine returned for one request. ``finish_reason``: ``stop``, ``length`` or None (unknown)."""

    text: str
    finish_reason: Optional[str] = None
    num_tokens: Optional[int] = None  # new tokens written (None: unknown)
    output: Any = None  # the engine's own result (token ids, log-probs), handed back to the adapter


@dataclass(frozen=True)
class ReflectItem:
    """One wrong path to reflect on. ``system``: the original prompt's system turns; ``key``: the caller's handle."""

    problem: Problem
    wrong: str
    critique: Optional[Judgment] = None
    system: tuple[Mapping[str, Any], ...] = ()
    key: Any = None


@dataclass(frozen=True)
class ReflectRequest:
    """What the generate function is asked for: the reflection prompt and its token budget."""

    messages: list[dict[str, Any]]  # system turns + the reflection turn; image parts carry their image
    images: tuple[Any, ...]
    max_tokens: int  # new tokens the engine must be asked for (vLLM max_tokens, SGLang max_new_tokens)
    temperature: Optional[float]  # None: the engine's rollout setting
    prompt_tokens: Optional[int]  # the prompt's length when the budget counted it
    item: ReflectItem


@dataclass(frozen=True)
class ReflectOutcome:
    """One item's result. ``status``: verified | rejected | undecidable | truncated | too_long | error."""

    item: ReflectItem
    status: str
    generation: Optional[Generation] = None  # the last refinement written (None: none was)
    verdict: Optional[PathVerdict] = None
    attempts: int = 0

    @property
    def accepted(self) -> bool:
        return self.status == "verified"


# ----------------------------------------------------------------------------- counters
COUNTS = ("paths", "correct", "wrong", "undecidable", "judge_errors", "critiques", "critic_errors",
          "critic_disagreed", "reflected",
          "refine_verified", "refine_rejected", "refine_undecidable", "reflect_too_long", "truncated",
          "generate_errors", "accepted")
# Wall seconds the step spent, per part (``seconds/<part>``): what a benchmark sets beside the trainer's step.
SECONDS = ("judge", "critique", "generate")


class StepCounters:
    """Counts of one step (or a run), overall and per data source; merge across processes and log.

        >>> c = StepCounters(); c.add("paths", 4, source="geo"); c.add("accepted", 1, source="geo")
        >>> c.as_metrics()["mathse/accepted_frac"], c.as_metrics()["mathse/geo/accepted_frac"]
        (0.25, 0.25)

    Counts add up when counters merge; wall seconds (``seconds/<part>``) do not: processes (and a
    worker's concurrent samples) spend them at the same time, so a merge keeps the largest.

        >>> a, b = StepCounters(), StepCounters(); a.add_seconds("judge", 2.0); b.add_seconds("judge", 3.0)
        >>> a.merge(b).as_metrics()["mathse/seconds/judge"]
        3.0
    """

    def __init__(self) -> None:
        from mathse_rl.orm import JudgeCounters  # the thread-safe event counter the ORM judge keeps too

        self._counts = JudgeCounters()
        self._seconds: dict[str, float] = {}
        self._lock = threading.Lock()

    def add(self, key: str, n: int = 1, source: str = "") -> None:
        if key not in COUNTS:
            raise KeyError(f"unknown step counter {key!r}; known: {COUNTS}")
        self._counts.add(key, n)
        if source:
            self._counts.add(f"{source}/{key}", n)

    def add_seconds(self, part: str, seconds: float) -> None:
        """Wall time spent in one part of the step (``judge``, ``critique``, ``generate``), added to that part's."""
        if part not in SECONDS:
            raise KeyError(f"unknown step part {part!r}; known: {SECONDS}")
        with self._lock:
            key = f"seconds/{part}"
            self._seconds[key] = self._seconds.get(key, 0.0) + float(seconds)

    def __getitem__(self, key: str) -> int:
        if key.startswith("seconds/"):
            with self._lock:
                return self._seconds.get(key, 0.0)  # type: ignore[return-value]
        return self._counts[key]

    def to_counts(self) -> dict[str, float]:
        """Flat ``{key, source/key or seconds/part: value}`` (what a gather across processes collects)."""
        with self._lock:
            seconds = dict(self._seconds)
        return {**self._counts.snapshot(), **seconds}

    @classmethod
    def from_counts(cls, counts: Mapping[str, float]) -> "StepCounters":
        return cls().merge(counts)

    def merge(self, other: "StepCounters | Mapping[str, float]") -> "StepCounters":
        """Add ``other``'s counts into this one; keep the larger of each part's seconds (returns self)."""
        counts = other.to_counts() if isinstance(other, StepCounters) else other
        for k, v in counts.items():
            if k.startswith("seconds/"):
                with self._lock:
                    self._seconds[k] = max(self._seconds.get(k, 0.0), float(v))
            else:
                self._counts.add(k, int(v))
        return self

    def as_metrics(self, prefix: str = "mathse/") -> dict[str, float]:
        """Counts and rates, overall and per data source (``mathse/<source>/...``).

        ``refine_rate``: reflected / paths (``reflected`` counts reflection requests, so above 1
        with ``reflect.attempts`` > 1); ``refine_verified_rate``: verified / reflected;
        ``accepted_frac``: accepted / paths.
        """
        counts = self.to_counts()
        sources = sorted({k.rsplit("/", 1)[0] for k in counts if "/" in k and not k.startswith("seconds/")})
        out: dict[str, float] = {f"{prefix}seconds/{p}": float(counts.get(f"seconds/{p}", 0.0)) for p in SECONDS}
        for source in [""] + sources:
            pre = f"{source}/" if source else ""
            get = lambda k: counts.get(pre + k, 0)  # noqa: E731
            for k in COUNTS:
                out[f"{prefix}{pre}{k}"] = float(get(k))
            paths, reflected = get("paths"), get("reflected")
            out[f"{prefix}{pre}refine_rate"] = get("reflected") / paths if paths else 0.0
            out[f"{prefix}{pre}refine_verified_rate"] = get("refine_verified") / reflected if reflected else 0.0
            out[f"{prefix}{pre}accepted_frac"] = get("accepted") / paths if paths else 0.0
        return out


class _Timer:
    """``with _Timer(counters, "judge"):`` adds the block's wall time to ``counters`` (if any)."""

    def __init__(self, counters: "StepCounters | None", part: str):
        self.counters, self.part = counters, part

    def __enter__(self) -> None:
        self.t0 = time.perf_counter()

    def __exit__(self, *exc: Any) -> None:
        if self.counters is not None:
            self.counters.add_seconds(self.part, time.perf_counter() - self.t0)


# ----------------------------------------------------------------------------- the judge
# Rewards that decide correctness by a verdict; a reward class may also say ``decides_correctness = True``
# (or ``False``: a shaping reward such as ``format``, refused as a judge on its own).
DECIDING_REWARDS = frozenset({"verifier", "orm", "orm_gated", "verifier+orm"})
# Verifier reasons that mean the path cannot be decided (unreadable gold reads as no_gold): types.py.
UNDECIDABLE_REASONS = _UNDECIDABLE_REASONS


def reward_input(problem: Problem, response: str, *, verify: Optional[Mapping[str, Any]] = None,
                 verdict: Optional["PathVerdict"] = None) -> RewardInput:
    """What a reward (or the ORM) sees for one path of ``problem``.

    ``verify``: the verifier options of the judge (``strict``, ``cues``), for a rule-based
    fallback or critic to read the answer as the judge does; ``verdict``: the judge's verdict on
    this path, for a critic to start from (``extra["verdict"]``: correct and reason).
    """
    extra: dict[str, Any] = {"problem_id": problem.id}
    if verify:
        extra["verify"] = dict(verify)
    if verdict is not None:
        extra["verdict"] = {"correct": verdict.correct, "reason": verdict.reason}
    return RewardInput(question=problem.question, response=response, gold=problem.gold, choices=problem.choices,
                       images=tuple(problem.images), data_source=problem.data_source, extra=extra)


def verdict_reward(verdict: "PathVerdict", undecidable_as_wrong: bool = False) -> Optional[float]:
    """The reward a trainer trains a path with, from the judge's verdict on it: one verdict per path.

    A decided path gets the judge reward's score of that same judgment (the verifier: 1.0 accepted,
    0.0 rejected; a composite: its weighted sum); an undecidable one None (left out of training), or
    0.0 with ``undecidable_as_wrong``.

        >>> verdict_reward(PathVerdict(True, "correct", 1.0)), verdict_reward(PathVerdict(False, "no_final_answer", 0.0))
        (1.0, 0.0)
        >>> verdict_reward(PathVerdict(None, "timeout")), verdict_reward(PathVerdict(None, "timeout"), True)
        (None, 0.0)
    """
    if verdict.correct is None:
        return 0.0 if undecidable_as_wrong else None
    if verdict.score is None:  # a deciding reward always scores what it decides; be safe all the same
        return float(verdict.correct)
    return float(verdict.score)


class Judge:
    """Tri-state verdicts per path from one judge reward (see the module docstring for the rule).

        Judge(StepConfig(judge="orm", critic={"backend": "openai", ...}))
        Judge("verifier")                         # a reward name (+ its options) is a config too
        judge.judge(problems, responses)          # -> list[PathVerdict], batched
        await judge.ajudge(problems, responses)   # off the event loop (verifier in a thread, ORM async)
        await judge.ajudge_one(problem, response) # concurrent callers share one batched call
    """

    def __init__(self, config: Any = None, threshold: Optional[float] = None, **judge_options: Any):
        if isinstance(config, str):
            config = {"judge": config, "judge_options": judge_options,
                      **({"threshold": threshold} if threshold is not None else {})}
        elif judge_options or threshold is not None:
            raise TypeError("reward options and threshold go with a judge name; a config carries its own")
        self.config = step_config(config)
        from mathse_rl.rewards import get_reward

        self.name = self.config.judge
        self.reward = get_reward(self.name, **judge_reward_options(self.config))
        self.deciders = self._deciders()
        self._orm = self._plain_orm()
        self._verify_options = self._read_verify_options()
        self._batchers: dict[int, tuple[asyncio.AbstractEventLoop, MicroBatcher]] = {}

    def _deciders(self) -> list[str]:
        from mathse_rl.rewards import WeightedReward

        if not isinstance(self.reward, WeightedReward):
            if getattr(self.reward, "decides_correctness", None) is False:
                raise ValueError(f"judge {self.name!r} only shapes the reward; it cannot decide correctness")
            return [""]  # the reward itself
        names = [r.name for _, r in self.reward.parts if _decides(r)]
        if not names:
            raise ValueError(f"judge {self.name!r} has no part that decides correctness (known: "
                             f"{sorted(DECIDING_REWARDS)}); a shaping reward alone cannot accept a path")
        return names

    # -- verdicts ------------------------------------------------------------------
    def judge(self, problems: Sequence[Problem], responses: Sequence[str], *,
              counters: StepCounters | None = None) -> list[PathVerdict]:
        """One verdict per path, in order; a crashed judge makes every path undecidable, never raises."""
        verdicts, todo, items = self._without_gold(problems, responses)
        got: Any = []
        if items:
            try:
                with _Timer(counters, "judge"):
                    got = self._orm_verdicts(items) if self._orm else self._verdicts(self.reward(items))
            except Exception as exc:
                got = exc
        return self._merged(problems, verdicts, todo, got, counters)

    async def ajudge(self, problems: Sequence[Problem], responses: Sequence[str], *,
                     counters: StepCounters | None = None) -> list[PathVerdict]:
        """:meth:`judge` without blocking the event loop (the verifier runs in a worker thread)."""
        verdicts, todo, items = self._without_gold(problems, responses)
        got: Any = []
        if items:
            try:
                with _Timer(counters, "judge"):
                    if self._orm:
                        got = self._orm_verdicts(items, await self.reward.judge.ajudge_detailed(items))
                    else:
                        got = self._verdicts(await self.reward.acall(items))
            except Exception as exc:
                got = exc
        return self._merged(problems, verdicts, todo, got, counters)

    async def ajudge_one(self, problem: Problem, response: str, *,
                         counters: StepCounters | None = None) -> PathVerdict:
        """One path; calls made concurrently on this event loop are judged together in one batch
        (what a per-sample agent loop needs to batch ORM calls across samples)."""
        loop = asyncio.get_running_loop()
        known = self._batchers.get(id(loop))
        if known is None or known[0] is not loop:
            known = self._batchers[id(loop)] = (loop, MicroBatcher(
                self._ajudge_pairs, self.config.max_batch, self.config.batch_window_ms / 1000.0))
        try:
            verdict = await known[1].submit((problem, response))
        except Exception as exc:  # ajudge does not raise; anything else makes this path undecidable
            verdict = Judge._failed(1, exc)[0]
        self._count([problem], [verdict], counters)
        return verdict

    async def _ajudge_pairs(self, pairs: list[tuple[Problem, str]]) -> list[PathVerdict]:
        return await self.ajudge([p for p, _ in pairs], [r for _, r in pairs])

    def trains_as_wrong(self, verdict: PathVerdict) -> bool:
        """Whether a path is trained as a failure: judged wrong, or undecidable with ``undecidable_as_wrong``."""
        return verdict.correct is False or (verdict.correct is None and self.config.undecidable_as_wrong)

    def reflects_on(self, verdict: PathVerdict) -> bool:
        """Whether a path is critiqued and reflected on: it trains as wrong and has a usable gold (a
        refinement of a path without one could never be verified)."""
        return self.trains_as_wrong(verdict) and verdict.reason != "no_gold"

    def reward_of(self, verdict: PathVerdict) -> Optional[float]:
        """The training reward of a path this judge gave ``verdict`` (:func:`verdict_reward`)."""
        return verdict_reward(verdict, self.config.undecidable_as_wrong)

    @property
    def verify_options(self) -> dict[str, Any]:
        """How this judge reads an answer with the rule verifier (``strict``, ``cues``): what a
        rule-based fallback or critic must use to agree with it."""
        return dict(self._verify_options)

    def _read_verify_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {"strict": bool(self.config.require_final_answer)}
        for settings in deciding_settings(self.reward).values():
            if "strict" in settings:  # the judge's own verifier part
                options["strict"] = bool(settings["strict"])
                if settings.get("cues"):
                    options["cues"] = list(settings["cues"])
        return options

    # -- internals -----------------------------------------------------------------
    def _without_gold(self, problems: Sequence[Problem], responses: Sequence[str],
                      ) -> tuple[list[Optional[PathVerdict]], list[int], list[RewardInput]]:
        """Paths with no or an unreadable gold are undecidable whatever the judge (no judge call);
        the rest are returned as reward inputs to judge."""
        from mathse_rl.verify import gold_is_valid

        verdicts: list[Optional[PathVerdict]] = []
        todo, items = [], []
        for i, (p, r) in enumerate(zip(problems, responses)):
            if p.gold is None or not gold_is_valid(p.gold):
                verdicts.append(PathVerdict(None, "no_gold"))
            else:
                verdicts.append(None)
                todo.append(i)
                items.append(reward_input(p, r, verify=self.verify_options))
        return verdicts, todo, items

    def _merged(self, problems: Sequence[Problem], verdicts: list[Optional[PathVerdict]], todo: list[int],
                got: Any, counters: StepCounters | None) -> list[PathVerdict]:
        """The judged verdicts (an exception: those paths undecidable) in place, counted."""
        if isinstance(got, Exception):
            got = self._failed(len(todo), got)
        for i, v in zip(todo, got):
            verdicts[i] = v
        self._count(problems, verdicts, counters)  # type: ignore[arg-type]
        return verdicts  # type: ignore[return-value]

    def _plain_orm(self) -> bool:
        # A plain ORM judge is asked directly, to keep its judgment (the critique of a wrong path).
        if self.deciders != [""] or not uses_orm(self.name):
            return False
        from mathse_rl.orm.reward import ORMReward

        return type(self.reward) is ORMReward

    def _orm_verdicts(self, items: list[RewardInput], results: Any = None) -> list[PathVerdict]:
        results = self.reward.judge.judge_detailed(items) if results is None else results
        out = []
        for r in results:
            j = r.judgment
            error = r.failure is not None
            if j is None:
                out.append(PathVerdict(None, "judge_error", None, None, True, {"failure": r.failure}))
            else:
                out.append(PathVerdict(j.correct, "correct" if j.correct else "wrong", float(j.score), j, error,
                                       {"source": r.source, "failure": r.failure}))
        return out

    def _verdicts(self, outs: Sequence[RewardOutput]) -> list[PathVerdict]:
        verdicts = []
        for o in outs:
            parts = [_component(o, name, self.config.threshold) for name in self.deciders]
            values = [c for c, _, _ in parts]
            error = any(e for _, _, e in parts)
            if any(v is False for v in values):
                correct, reason = False, next(r for c, r, _ in parts if c is False)
            elif all(v is True for v in values):
                correct, reason = True, "correct"
            else:
                correct, reason = None, next(r for c, r, _ in parts if c is None)
            verdicts.append(PathVerdict(correct, reason, o.score, None, error, dict(o.extras)))
        return verdicts

    @staticmethod
    def _failed(n: int, exc: Exception) -> list[PathVerdict]:
        logger.warning("judge failed on a batch of %d paths (%s: %s); they are undecidable", n,
                       type(exc).__name__, exc)
        return [PathVerdict(None, "judge_error", judge_error=True)] * n

    @staticmethod
    def _count(problems: Sequence[Problem], verdicts: Sequence[PathVerdict], counters: StepCounters | None) -> None:
        if counters is None:
            return
        for p, v in zip(problems, verdicts):
            src = p.data_source
            counters.add("paths", source=src)
            counters.add("correct" if v.correct else "wrong" if v.correct is False else "undecidable", source=src)
            if v.correct:
                counters.add("accepted", source=src)
            if v.judge_error:
                counters.add("judge_errors", source=src)


def _decides(reward: Any) -> bool:
    declared = getattr(reward, "decides_correctness", None)
    return reward.name in DECIDING_REWARDS if declared is None else bool(declared)


def _component(out: RewardOutput, name: str, threshold: float) -> tuple[Optional[bool], str, bool]:
    """(correct, reason, judge_error) of one deciding component of a reward output."""
    pre = f"{name}/" if name else ""
    extras = out.extras or {}
    score = extras.get(pre + "score") if name else out.score
    failure = extras.get(pre + "failure")
    if pre + "status" in extras:  # an ORM reward: its status decides
        status = extras.get(pre + "status")
        if status is None:
            return None, "judge_error", True
        return status == "CORRECT", "correct" if status == "CORRECT" else "wrong", failure is not None
    reason = extras.get(pre + "reason")
    if reason is not None:  # the verifier: its verdict decides
        if reason in UNDECIDABLE_REASONS or score is None:
            return None, str(reason), False
        return bool(score >= 0.5), "correct" if score >= 0.5 else str(reason), False
    if score is None:
        return None, "unscored", False
    return bool(score >= threshold), "correct" if score >= threshold else "wrong", False


# ----------------------------------------------------------------------------- one verdict: reward vs judge
def deciding_settings(reward: Any) -> dict[str, dict[str, Any]]:
    """``{part name: settings}`` of the parts of a built reward that decide correctness (a plain
    reward: itself, unless it says ``decides_correctness = False``); settings from ``Reward.settings()``.

        >>> from mathse_rl.rewards import get_reward
        >>> deciding_settings(get_reward("verifier+format"))
        {'verifier': {'timeout': 5.0, 'strict': True, 'cues': None}}
    """
    from mathse_rl.rewards import WeightedReward

    parts = reward.parts if isinstance(reward, WeightedReward) else [(1.0, reward)]
    plain = not isinstance(reward, WeightedReward)
    out = {}
    for _, part in parts:
        if (plain and getattr(part, "decides_correctness", None) is not False) or (not plain and _decides(part)):
            settings = getattr(part, "settings", None)
            out[part.name] = dict(settings()) if callable(settings) else {}
    return out


def deciding_parts(spec: Any) -> list[str]:
    """Names of the parts of a reward spec that decide correctness by a verdict of their own (a name in
    :data:`DECIDING_REWARDS` or a class saying ``decides_correctness = True``), read from the registry
    without building anything (an ORM may load a model): ``verifier+format`` -> ``['verifier']``.
    A custom reward that declares nothing is a score, not a verdict, beside a judge."""
    from mathse_rl.rewards.registry import _resolve, parse_spec

    name = spec.strip() if isinstance(spec, str) else None
    parts = [name] if name is not None and _resolve(name) is not None else [n for n, _ in parse_spec(spec)]
    out = []
    for part in parts:
        declared = getattr(_resolve(part), "decides_correctness", None)
        if part in DECIDING_REWARDS if declared is None else bool(declared):
            out.append(part)
    return out


def normal_spec(spec: Any) -> str:
    """One spelling of a reward spec (``{"verifier": 1, "format": 1}`` and ``"verifier + format"`` alike)."""
    from mathse_rl.rewards.registry import _resolve, parse_spec, spec_name

    if isinstance(spec, str) and _resolve(spec.strip()) is not None:
        return spec.strip()
    return spec_name(parse_spec(spec))


def judge_settings(config: "StepConfig | Judge") -> dict[str, dict[str, Any]]:
    """:func:`deciding_settings` of a judge, or of the judge a :class:`StepConfig` would build, without
    loading any model (an ORM part reports its :class:`~mathse_rl.orm.config.JudgeConfig`)."""
    if isinstance(config, Judge):
        return deciding_settings(config.reward)
    from mathse_rl.rewards import get_reward

    options = judge_reward_options(config)
    if not uses_orm(config.judge):
        return deciding_settings(get_reward(config.judge, **options))
    from mathse_rl.orm.config import JudgeConfig, judge_config

    known = {f.name for f in dataclasses.fields(JudgeConfig)}
    names = _part_names(config.judge)
    shared = {k: v for k, v in options.items() if not (k in names and isinstance(v, Mapping))}
    out = {}
    for part in deciding_parts(config.judge):
        mine = {**shared, **dict(options.get(part) or {})} if isinstance(options.get(part), Mapping) else shared
        if part.startswith("orm") or part == "verifier+orm":
            out[part] = dataclasses.asdict(judge_config({k: v for k, v in mine.items() if k in known}))
        else:
            out.update(deciding_settings(get_reward(part, **mine)))
    return out


def verdict_mismatches(spec: Any, options: Mapping[str, Any] | None, judge: "StepConfig | Judge", *,
                       reward_setting: str, judge_setting: str) -> list[str]:
    """What makes a reward configured beside the step's judge decide differently from it (empty: they agree).

    A reward with no deciding part (``format``) agrees with any judge. One that decides must be the
    judge's spec, and every option it sets explicitly (``options``; unset ones follow the judge) must
    equal the judge reward's own. ``judge``: a built :class:`Judge` or the :class:`StepConfig` of one
    (then nothing is built that loads a model). ``reward_setting`` / ``judge_setting`` name the two
    settings in the messages (e.g. ``reward_funcs[0] 'verifier'`` and ``MathSEConfig``).

        >>> verdict_mismatches("verifier", {"strict": False}, StepConfig(), reward_setting="reward",
        ...                    judge_setting="mathse")
        ['reward sets strict=False, the judge uses True (mathse.require_final_answer)']
    """
    config = judge.config if isinstance(judge, Judge) else judge
    parts = deciding_parts(spec)
    if not parts:
        return []
    if normal_spec(spec) != normal_spec(config.judge):
        return [f"{reward_setting} decides correctness ({'+'.join(parts)}) but the judge is "
                f"{judge_setting}.judge={config.judge!r}: name the same reward in both (a composite judge such as "
                f"verifier+format still decides on its deciding parts only)"]
    settings = judge_settings(judge)
    if len(settings) == 1 and set(settings) != set(parts):  # an alias (verifier+orm is orm_gated)
        settings = {parts[0]: next(iter(settings.values()))}
    options = dict(options or {})
    per_part = {k: dict(v) for k, v in options.items() if k in settings and isinstance(v, Mapping)}
    shared = {k: v for k, v in options.items() if k not in per_part}
    out = []
    for part, mine in settings.items():
        for key, value in {**shared, **per_part.get(part, {})}.items():
            if key in mine and _same_value(value) != _same_value(mine[key]):
                where = ("require_final_answer" if key == "strict" else
                         f"judge_options.{key}" if config.judge_options or not uses_orm(config.judge)
                         else f"critic.{key}")
                name = key if len(settings) == 1 else f"{part}.{key}"
                out.append(f"{reward_setting} sets {name}={value!r}, the judge uses {mine[key]!r} "
                           f"({judge_setting}.{where})")
    return out


def _same_value(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return tuple(_same_value(v) for v in value)
    if isinstance(value, Mapping):
        return tuple(sorted((k, _same_value(v)) for k, v in value.items()))
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, (int, float)):
        return float(value)
    return value


# ----------------------------------------------------------------------------- critique
class Critic:
    """Writes critiques (error step, analysis) of wrong paths with an ORM backend (:func:`mathse_rl.orm.load_judge`).

    A failure gives no critique (None, counted as ``critic_errors``); reflection goes on with
    an "unknown" error step. Given the judge's ``verdicts``, the critic starts from them: the
    rule-based (``verifier``) backend critiques the verdict instead of judging the path again.
    """

    def __init__(self, config: Mapping[str, Any] | None = None):
        from mathse_rl.orm import load_judge

        self.config = dict(config or {"backend": "verifier"})
        self.backend = load_judge(self.config)

    def critique(self, problems: Sequence[Problem], responses: Sequence[str],
                 verdicts: Optional[Sequence[Optional[PathVerdict]]] = None) -> list[Optional[Judgment]]:
        return list(self.backend.judge(_critic_inputs(problems, responses, verdicts)))

    async def acritique(self, problems: Sequence[Problem], responses: Sequence[str],
                        verdicts: Optional[Sequence[Optional[PathVerdict]]] = None) -> list[Optional[Judgment]]:
        return list(await self.backend.ajudge(_critic_inputs(problems, responses, verdicts)))


def _critic_inputs(problems: Sequence[Problem], responses: Sequence[str],
                   verdicts: Optional[Sequence[Optional[PathVerdict]]]) -> list[RewardInput]:
    given = list(verdicts) if verdicts is not None else [None] * len(problems)
    return [reward_input(p, r, verdict=v) for p, r, v in zip(problems, responses, given)]


def _own_critiques(verdicts: Optional[Sequence[PathVerdict]], n: int) -> tuple[list[Optional[Judgment]], list[int]]:
    """An ORM judge's judgment of a wrong path is its critique (the paper's ORM does both); the rest to do."""
    out: list[Optional[Judgment]] = [None] * n if verdicts is None else [
        v.judgment if v.judgment is not None and not v.judgment.correct else None for v in verdicts]
    return out, [i for i, c in enumerate(out) if c is None]


def _critiqued(problems: Sequence[Problem], responses: Sequence[str], out: list[Optional[Judgment]],
               todo: list[int], got: Any, verdicts: Optional[Sequence[PathVerdict]],
               counters: StepCounters | None) -> list[Optional[Judgment]]:
    """Fill in the critic's answers (an exception: no critique for those paths) and count them.

    A critique that calls CORRECT a path the judge did not accept contradicts the one verdict: it is
    replaced by the rule critique of the judge's verdict (which says why, e.g. no stated final
    answer) and counted as ``critic_disagreed``."""
    if isinstance(got, Exception):
        logger.warning("critic failed on %d paths (%s: %s); reflecting without critique", len(todo),
                       type(got).__name__, got)
        got = [None] * len(todo)
    got = list(got or [])
    if len(got) != len(todo):
        logger.warning("critic returned %d critiques for %d paths; reflecting without critique", len(got), len(todo))
        got = [None] * len(todo)
    for i, c in zip(todo, got):
        if c is not None and c.correct and verdicts is not None and verdicts[i].correct is not True:
            if counters is not None:
                counters.add("critic_disagreed", source=problems[i].data_source)
            c = rule_critique(problems[i], responses[i], verdicts[i])
        out[i] = c
    if counters is not None:
        for p, c in zip(problems, out):
            counters.add("critiques" if c is not None else "critic_errors", source=p.data_source)
    return out


def rule_critique(problem: Problem, response: str, verdict: PathVerdict) -> Judgment:
    """The rule-based critique of a path the judge did not accept, written from its verdict (the
    ``verifier`` critic's own writing: first wrong step it can find, else what the reason says)."""
    from mathse_rl.orm.backends.verifier import critique as write
    from mathse_rl.orm.steps import segment_steps

    return write(reward_input(problem, response, verdict=verdict), segment_steps(response), verdict.reason)


def _ask_critic(critic: Any, problems: list[Problem], responses: list[str],
                verdicts: Optional[list[PathVerdict]]) -> tuple[tuple, dict]:
    """(args, kwargs) of a critic call: our :class:`Critic` is handed the verdicts; another critic
    object (``critique(problems, responses)``) is asked as it was."""
    kwargs = {"verdicts": verdicts} if isinstance(critic, Critic) and verdicts is not None else {}
    return (problems, responses), kwargs


def critique(critic: Any, problems: Sequence[Problem], responses: Sequence[str], *,
             verdicts: Optional[Sequence[PathVerdict]] = None,
             counters: StepCounters | None = None) -> list[Optional[Judgment]]:
    """Critiques of wrong paths, batched; an ORM judge's own judgment (in ``verdicts``) is reused and
    the critic starts from the judge's verdicts (see :class:`Critic`, :func:`_critiqued`).

    Never raises: a failed critic gives None critiques, counted as ``critic_errors``.
    """
    out, todo = _own_critiques(verdicts, len(problems))
    got: Any = None
    if todo:
        args, kwargs = _ask_critic(critic, [problems[i] for i in todo], [responses[i] for i in todo],
                                      [verdicts[i] for i in todo] if verdicts is not None else None)
        try:
            with _Timer(counters, "critique"):
                got = critic.critique(*args, **kwargs)
        except Exception as exc:
            got = exc
    return _critiqued(problems, responses, out, todo, got, verdicts, counters)


async def acritique(critic: Any, problems: Sequence[Problem], responses: Sequence[str], *,
                    verdicts: Optional[Sequence[PathVerdict]] = None,
                    counters: StepCounters | None = None) -> list[Optional[Judgment]]:
    """:func:`critique` for coroutines (the critic's async form, else a worker thread)."""
    out, todo = _own_critiques(verdicts, len(problems))
    got: Any = None
    if todo:
        args, kwargs = _ask_critic(critic, [problems[i] for i in todo], [responses[i] for i in todo],
                                      [verdicts[i] for i in todo] if verdicts is not None else None)
        try:
            with _Timer(counters, "critique"):
                if hasattr(critic, "acritique"):
                    got = await critic.acritique(*args, **kwargs)
                else:
                    got = await asyncio.to_thread(critic.critique, *args, **kwargs)
        except Exception as exc:
            got = exc
    return _critiqued(problems, responses, out, todo, got, verdicts, counters)


# ----------------------------------------------------------------------------- token budget
ENGINES = ("vllm", "sglang", "hf")


def granted_tokens(prompt_tokens: int, max_tokens: int, context_limit: Optional[int], engine: str = "vllm") -> int:
    """New tokens an engine grants a request of ``prompt_tokens`` asking for ``max_tokens``.

    vLLM (verl's server): ``max(1, min(max_tokens, context - prompt))``, refused when no token
    fits; SGLang: ``max(0, min(max_tokens, context - prompt - 1))``; hf: ``max_tokens``. 0 means
    refused. The CPU rollout stand-ins apply the same rule.

        >>> granted_tokens(3000, 2048, 4096), granted_tokens(3000, 2048, 4096, "sglang")
        (1096, 1095)
    """
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    if context_limit is None or engine == "hf":
        return max_tokens
    room = context_limit - prompt_tokens - (1 if engine == "sglang" else 0)
    if room < (1 if engine == "vllm" else 0):
        return 0
    return max(1 if engine == "vllm" else 0, min(max_tokens, room))


CountTokens = Callable[[list[dict[str, Any]], tuple[Any, ...]], Union[int, Awaitable[int]]]


@dataclass(frozen=True)
class TokenBudget:
    """What the engine will grant a reflection: every request asks for ``max_tokens`` new tokens.

    ``context_limit`` (vLLM ``max_model_len``) and ``count_tokens(messages, images)`` (sync or
    async) let the step check the prompt first: a prompt that leaves fewer than ``max_tokens``
    within the context is skipped and counted as ``reflect_too_long`` (the engine would cut the
    refinement short). Without them the prompt is not checked.
    """

    max_tokens: int
    context_limit: Optional[int] = None
    count_tokens: Optional[CountTokens] = None
    engine: str = "vllm"

    def fits(self, prompt_tokens: Optional[int]) -> bool:
        if prompt_tokens is None or self.context_limit is None:
            return True
        return granted_tokens(prompt_tokens, self.max_tokens, self.context_limit, self.engine) >= self.max_tokens

    def truncated(self, gen: Generation) -> bool:
        """A refinement that stopped on its token limit (finish reason ``length`` or ``max_tokens`` written)."""
        if gen.finish_reason is not None:
            return gen.finish_reason == "length"
        return gen.num_tokens is not None and gen.num_tokens >= self.max_tokens


def reflection_messages(item: ReflectItem, template: str = "paper") -> list[dict[str, Any]]:
    """The reflection prompt of ``item``: its system turns, then the reflection turn whose image
    parts carry the problem's images (the shape trl's and verl's chat templates take)."""
    messages = build_reflect_messages(item.problem, item.wrong, item.critique, template=template)
    images = iter(item.problem.images)
    for m in messages:
        if isinstance(m["content"], list):
            m["content"] = [dict(p, image=next(images, None)) if p.get("type") == "image" else p
                            for p in m["content"]]
    return [dict(m) for m in item.system] + messages


# ----------------------------------------------------------------------------- reflect and re-judge
GenerateFn = Callable[[list[ReflectRequest]], Sequence[Union[Generation, str, BaseException]]]
AGenerateFn = Callable[[list[ReflectRequest]], Awaitable[Sequence[Union[Generation, str, BaseException]]]]


class _Reflection:
    """The state of one ``reflect_and_rejudge`` call, shared by its sync and async forms."""

    def __init__(self, judge: Judge, items: Sequence[ReflectItem], budget: TokenBudget,
                 options: Optional[ReflectOptions], counters: Optional[StepCounters]):
        self.judge, self.budget = judge, budget
        self.options = options or judge.config.reflect
        self.counters = counters if counters is not None else StepCounters()
        self.items = list(items)
        self.current = list(self.items)  # the path each item reflects on next (the last wrong refinement)
        self.outcomes: list[Optional[ReflectOutcome]] = [None] * len(self.items)
        self.last: list[Optional[ReflectOutcome]] = [None] * len(self.items)

    def add(self, key: str, i: int) -> None:
        self.counters.add(key, source=self.items[i].problem.data_source)

    def prompts(self, todo: list[int]) -> list[list[dict[str, Any]]]:
        return [reflection_messages(self.current[i], self.options.template) for i in todo]

    def requests(self, todo: list[int], prompts: list[list[dict[str, Any]]],
                 prompt_tokens: list[Optional[int]]) -> tuple[list[int], list[ReflectRequest]]:
        keep, reqs = [], []
        for i, messages, n in zip(todo, prompts, prompt_tokens):
            it = self.current[i]
            if not self.budget.fits(n):
                # Skipped: the engine would cut the refinement short. A rejected earlier attempt stays the outcome.
                self.add("reflect_too_long", i)
                self.outcomes[i] = self.last[i] or ReflectOutcome(self.items[i], "too_long")
                continue
            keep.append(i)
            reqs.append(ReflectRequest(messages, tuple(it.problem.images), self.budget.max_tokens,
                                       self.options.temperature, n, self.items[i]))
        return keep, reqs

    def generated(self, keep: list[int], outs: Sequence[Any], attempt: int) -> tuple[list[int], list[Generation]]:
        """Sort the engine's results: errors and truncations end this attempt; the rest are re-judged."""
        if len(outs) != len(keep):
            outs = [RuntimeError(f"generate returned {len(outs)} results for {len(keep)} requests")] * len(keep)
        judge_idx, gens = [], []
        for i, out in zip(keep, outs):
            self.add("reflected", i)
            if isinstance(out, BaseException):
                self.add("generate_errors", i)
                self.last[i] = ReflectOutcome(self.items[i], "error", None, None, attempt)
                continue
            gen = out if isinstance(out, Generation) else Generation(str(out))
            if self.budget.truncated(gen):
                self.add("truncated", i)
                self.last[i] = ReflectOutcome(self.items[i], "truncated", gen, None, attempt)
                continue
            judge_idx.append(i)
            gens.append(gen)
        return judge_idx, gens

    def judged(self, idx: list[int], gens: list[Generation], verdicts: list[PathVerdict], attempt: int) -> list[int]:
        """Record verdicts; return the items to critique for another attempt."""
        again = []
        for i, gen, v in zip(idx, gens, verdicts):
            status = "verified" if v.correct else "rejected" if v.correct is False else "undecidable"
            self.add({"verified": "refine_verified", "rejected": "refine_rejected",
                      "undecidable": "refine_undecidable"}[status], i)
            self.last[i] = ReflectOutcome(self.items[i], status, gen, v, attempt)
            if status == "verified":
                self.outcomes[i] = self.last[i]
                self.add("accepted", i)
            elif status == "rejected" and attempt < self.options.attempts:
                again.append(i)
            if status == "rejected":
                self.current[i] = dataclasses.replace(self.current[i], wrong=gen.text, critique=v.judgment)
        return again

    def retry(self, again: list[int], attempt: int) -> list[int]:
        """Items for the next attempt: rejected ones, and those whose refinement was cut short or failed."""
        if attempt >= self.options.attempts:
            return []
        return [i for i, o in enumerate(self.outcomes) if o is None and (
            i in again or (self.last[i] is not None and self.last[i].status in ("truncated", "error")))]

    def recritique(self, idx: list[int], critiques: Sequence[Optional[Judgment]]) -> None:
        for i, c in zip(idx, critiques):
            self.current[i] = dataclasses.replace(self.current[i], critique=c)

    def result(self) -> list[ReflectOutcome]:
        return [o or self.last[i] or ReflectOutcome(self.items[i], "error") for i, o in enumerate(self.outcomes)]


def reflect_and_rejudge(judge: Judge, items: Sequence[ReflectItem], generate: GenerateFn, budget: TokenBudget, *,
                        critic: Any = None, options: Optional[ReflectOptions] = None,
                        counters: Optional[StepCounters] = None) -> list[ReflectOutcome]:
    """Reflect on each wrong path and re-judge the refinement, up to ``reflect.attempts`` times.

    ``generate(requests)`` is the engine (one result per request: a :class:`Generation`, a
    string, or the exception that request raised); every request carries ``max_tokens``. A
    later attempt reflects on the previous (rejected) refinement with a fresh critique from
    ``critic`` (or the ORM judge's own). Only ``verified`` outcomes are accepted.
    """
    run = _Reflection(judge, items, budget, options, counters)
    todo = list(range(len(run.items)))
    for attempt in range(1, run.options.attempts + 1):
        if not todo:
            break
        prompts = run.prompts(todo)
        sizes = [_count_sync(budget, m, run.current[i].problem.images) for i, m in zip(todo, prompts)]
        keep, reqs = run.requests(todo, prompts, sizes)
        try:
            with _Timer(run.counters, "generate"):
                outs = list(generate(reqs)) if reqs else []
        except Exception as exc:
            logger.warning("reflection generation failed on %d requests (%s: %s)", len(reqs), type(exc).__name__, exc)
            outs = [exc] * len(reqs)
        idx, gens = run.generated(keep, outs, attempt)
        with _Timer(run.counters, "judge"):
            verdicts = judge.judge([run.items[i].problem for i in idx], [g.text for g in gens])
        again = run.judged(idx, gens, verdicts, attempt)
        todo = run.retry(again, attempt)
        if again and critic is not None and todo:
            run.recritique(again, critique(critic, [run.items[i].problem for i in again],
                                           [run.current[i].wrong for i in again],
                                           verdicts=[run.last[i].verdict for i in again], counters=run.counters))
    return run.result()


async def areflect_and_rejudge(judge: Judge, items: Sequence[ReflectItem], generate: AGenerateFn,
                               budget: TokenBudget, *, critic: Any = None, options: Optional[ReflectOptions] = None,
                               counters: Optional[StepCounters] = None) -> list[ReflectOutcome]:
    """:func:`reflect_and_rejudge` for coroutines: ``await generate(requests)``; judging and
    critiques run off the event loop (see :meth:`Judge.ajudge`)."""
    run = _Reflection(judge, items, budget, options, counters)
    todo = list(range(len(run.items)))
    for attempt in range(1, run.options.attempts + 1):
        if not todo:
            break
        prompts = run.prompts(todo)
        sizes = [await _count_async(budget, m, run.current[i].problem.images) for i, m in zip(todo, prompts)]
        keep, reqs = run.requests(todo, prompts, sizes)
        try:
            with _Timer(run.counters, "generate"):
                outs = list(await generate(reqs)) if reqs else []
        except Exception as exc:
            logger.warning("reflection generation failed on %d requests (%s: %s)", len(reqs), type(exc).__name__, exc)
            outs = [exc] * len(reqs)
        idx, gens = run.generated(keep, outs, attempt)
        with _Timer(run.counters, "judge"):
            verdicts = await judge.ajudge([run.items[i].problem for i in idx], [g.text for g in gens])
        again = run.judged(idx, gens, verdicts, attempt)
        todo = run.retry(again, attempt)
        if again and critic is not None and todo:
            run.recritique(again, await acritique(critic, [run.items[i].problem for i in again],
                                                  [run.current[i].wrong for i in again],
                                                  verdicts=[run.last[i].verdict for i in again], counters=run.counters))
    return run.result()


def _count_sync(budget: TokenBudget, messages: list[dict[str, Any]], images: Sequence[Any]) -> Optional[int]:
    if budget.count_tokens is None or budget.context_limit is None:
        return None
    n = budget.count_tokens(messages, tuple(images))
    if inspect.isawaitable(n):
        raise TypeError("count_tokens is async: use areflect_and_rejudge")
    return int(n)


async def _count_async(budget: TokenBudget, messages: list[dict[str, Any]], images: Sequence[Any]) -> Optional[int]:
    if budget.count_tokens is None or budget.context_limit is None:
        return None
    n = budget.count_tokens(messages, tuple(images))
    return int(await n) if inspect.isawaitable(n) else int(n)


__all__ = [
    "AGenerateFn", "COUNTS", "Critic", "DECIDING_REWARDS", "ENGINES", "GenerateFn", "Generation", "Judge",
    "PathVerdict", "ReflectItem", "ReflectOptions", "ReflectOutcome", "ReflectRequest", "SECONDS", "StepConfig",
    "StepCounters",
    "TokenBudget", "UNDECIDABLE_REASONS", "acritique", "areflect_and_rejudge", "critique", "deciding_parts",
    "deciding_settings", "granted_tokens", "judge_reward_options", "judge_settings", "normal_spec",
    "reflect_and_rejudge", "reflection_messages", "reward_input", "rule_critique", "step_config", "uses_orm",
    "verdict_mismatches", "verdict_reward",
]
