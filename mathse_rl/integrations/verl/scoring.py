"""verl's ``compute_score`` interface over the reward registry, and the one-verdict rule on verl's side.

Point verl's custom reward function at this package and name the reward::

    reward.custom_reward_function.path=pkg://mathse_rl.integrations.verl
    reward.custom_reward_function.name=compute_score          # verl's default
    +reward.custom_reward_function.reward_kwargs.reward=verifier   # or verifier+format, orm, ...

>>> compute_score("demo", "... The answer to this problem is 5.", "5", reward="format")["score"]
1.0

The result is a dict with ``score`` (what verl puts on the last response token), ``acc``,
``scored`` and the reward's extras; every sample gets the same keys, which verl's reward loop
stacks into columns (and DAPO's ``filter_groups.metric`` reads as numbers).

**One verdict per path.** A reward that decides correctness (``verifier``, ``orm``, alone or in
a composite) is scored through the MathSE step's judge (:class:`mathse_rl.step.Judge`), so the
reward verl trains on is the judge's verdict (:func:`mathse_rl.step.verdict_reward`):

- ``acc``: 1.0 when the judge accepts the response, else 0.0 (wrong or undecidable): always a number;
- ``score``: the judge reward's score of a decided response (the verifier: 1.0 / 0.0); for an
  undecidable one (no or unreadable gold, verifier timeout, judge failure) ``unscored_value``
  (default 0.0) with ``scored=False``, or, with ``mathse.undecidable_as_wrong: true``, 0.0 with
  ``scored=True``. ``compute_score`` (verl's ``naive`` manager) never sees the ``mathse``
  section: it takes ``undecidable_as_wrong`` as a reward keyword, and the start check refuses a
  run whose reward keyword and ``mathse.undecidable_as_wrong`` differ.

A response the ``mathse_reflect`` agent loop has judged carries that verdict
(``extra_fields["mathse_verdict"]``, :data:`VERDICT_FIELD`); it is used as it is, never judged
again, so the reward and the step's acceptance come from one judgment. A reward configured beside
a ``mathse`` section must be that section's judge with the same options, or
:func:`check_reward_config` refuses the run at start, naming both settings.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

from mathse_rl.rewards import Reward, get_reward
from mathse_rl.types import Problem, RewardInput, RewardOutput

DEFAULT_REWARD = "verifier"
# The extra field in which the agent loop hands its verdict on an output to the reward.
VERDICT_FIELD = "mathse_verdict"
# The trainer-config section of the MathSE step, and the step options that decide a verdict.
CONFIG_SECTION = "mathse"
# The repository's path shims for verl's custom_reward_function.path (they call compute_score).
SHIM_FILES = ("rewards/verifier.py", "rewards/orm.py")
VERDICT_OPTIONS = ("judge", "judge_options", "critic", "undecidable_as_wrong", "require_final_answer", "threshold")

_cache: dict[str, Any] = {}
_cache_lock = threading.RLock()  # a scorer builds its reward through the same cache


def _plain(value: Any) -> Any:
    """OmegaConf containers (verl passes its config pieces) -> plain Python."""
    if hasattr(value, "_metadata") and hasattr(value, "items"):  # DictConfig without importing omegaconf
        from omegaconf import OmegaConf

        return OmegaConf.to_container(value, resolve=True)
    return value


def _cached(key: Any, build: Any) -> Any:
    key = json.dumps(key, sort_keys=True, default=repr)
    value = _cache.get(key)
    if value is None:
        with _cache_lock:
            value = _cache.get(key)
            if value is None:
                value = _cache[key] = build()
    return value


def reward_for(spec: Any = DEFAULT_REWARD, options: Mapping[str, Any] | None = None,
               reward_router_address: str | None = None) -> Reward:
    """The reward for a spec and options, built once per process (verl calls per sample).

    ``reward_router_address`` (verl's reward-model router, when it runs one) is handed to
    rewards that take it (the ORM) and dropped for those that do not.
    """
    spec, options = _plain(spec), dict(_plain(options) or {})
    if reward_router_address is not None and "reward_router_address" not in options:
        try:
            return reward_for(spec, {**options, "reward_router_address": reward_router_address})
        except TypeError:
            pass
    return _cached(["reward", spec, options], lambda: get_reward(spec, **options))


# ----------------------------------------------------------------------------- settings and the start check
@dataclass(frozen=True)
class RewardSettings:
    """What ``reward.reward_kwargs`` (or ``reward.custom_reward_function.reward_kwargs``) says."""

    reward: Any = DEFAULT_REWARD  # registry name or composite spec
    reward_options: dict[str, Any] = field(default_factory=dict)  # passed to the reward's factory
    unscored_value: float = 0.0  # score of a sample the reward cannot decide (scored=False)
    max_batch: int = 256  # most samples scored in one reward call
    batch_window_s: float = 0.002  # wait this long for more samples
    undecidable_as_wrong: bool | None = None  # compute_score's copy of mathse.undecidable_as_wrong (None: unset)
    where: str = "reward.reward_kwargs"  # where these were read (for messages)
    given: tuple[str, ...] = ()  # the keys the user set


def reward_settings(config: Any) -> RewardSettings:
    """Reward name, options, batching and fallback from ``reward.reward_kwargs`` (or, failing that,
    ``reward.custom_reward_function.reward_kwargs``)."""
    reward_cfg = config.get("reward", {}) if hasattr(config, "get") else {}
    reward_cfg = reward_cfg or {}
    kwargs = _plain(reward_cfg.get("reward_kwargs")) or {}
    where = "reward.reward_kwargs"
    if "reward" not in kwargs:
        custom = _plain((reward_cfg.get("custom_reward_function") or {}).get("reward_kwargs")) or {}
        if custom:
            where = "reward.custom_reward_function.reward_kwargs"
        kwargs = {**custom, **kwargs}
    return RewardSettings(
        reward=kwargs.get("reward", DEFAULT_REWARD),
        reward_options=dict(kwargs.get("reward_options") or {}),
        unscored_value=float(kwargs.get("unscored_value", 0.0)),
        max_batch=int(kwargs.get("max_batch", 256)),
        batch_window_s=float(kwargs.get("batch_window_s", 0.002)),
        undecidable_as_wrong=(None if kwargs.get("undecidable_as_wrong") is None
                              else bool(kwargs["undecidable_as_wrong"])),
        where=where,
        given=tuple(sorted(kwargs)),
    )


def mathse_step(config: Any) -> Any:
    """The MathSE step's verdict options (:class:`mathse_rl.step.StepConfig`) from the trainer
    config's ``mathse`` section; None when there is none (verl without MathSE)."""
    from mathse_rl.step import step_config

    section = config.get(CONFIG_SECTION) if hasattr(config, "get") else None
    section = _plain(section) or {}
    if not section:
        return None
    return step_config({k: v for k, v in dict(section).items() if k in VERDICT_OPTIONS})


def check_reward_config(config: Any, step: Any = None) -> Any:
    """Refuse a verl config whose reward would decide differently from its MathSE judge; return the
    step config (None without a ``mathse`` section). Builds nothing that loads a model.

    The reward is derived from ``mathse.judge`` unless the reward settings name one; a named reward
    that decides correctness must be that judge, and options it sets must be the judge's. With
    ``mathse.undecidable_as_wrong: true`` an undecidable sample is rewarded 0.0, so an
    ``unscored_value`` other than 0.0 contradicts it. ``compute_score`` (any reward manager but
    ``mathse``) cannot read the ``mathse`` section, so its ``undecidable_as_wrong`` keyword must say
    what the step says.
    """
    from mathse_rl.step import verdict_mismatches

    step = step if step is not None else mathse_step(config)
    if step is None:
        return None
    s = reward_settings(config)
    problems = []
    reward_cfg = (config.get("reward") if hasattr(config, "get") else None) or {}
    manager = str(((reward_cfg.get("reward_manager") or {}).get("name")) or "")
    custom = str(((reward_cfg.get("custom_reward_function") or {}).get("path")) or "")
    ours = "mathse_rl" in custom or custom.replace("\\", "/").endswith(SHIM_FILES)
    # what our compute_score does with an undecidable sample (the mathse manager reads the section itself;
    # a reward function of someone else's is theirs to configure)
    own = bool(s.undecidable_as_wrong) if s.undecidable_as_wrong is not None else (
        False if manager != "mathse" and ours else None)
    if own is not None and own != step.undecidable_as_wrong:
        where = s.where if manager == "mathse" or "undecidable_as_wrong" in s.given else \
            "reward.custom_reward_function.reward_kwargs"
        problems.append(f"{where}.undecidable_as_wrong={own} (what compute_score does with an undecidable "
                        f"sample) but {CONFIG_SECTION}.undecidable_as_wrong={step.undecidable_as_wrong}: set "
                        f"both the same (compute_score cannot read the {CONFIG_SECTION} section)")
    if "reward" in s.given or s.reward_options:
        spec = s.reward if "reward" in s.given else step.judge
        problems += verdict_mismatches(spec, s.reward_options, step, reward_setting=f"{s.where}.reward={spec!r}"
                                       if "reward" in s.given else f"{s.where}.reward_options",
                                       judge_setting=CONFIG_SECTION)
    if step.undecidable_as_wrong and "unscored_value" in s.given and s.unscored_value != 0.0:
        problems.append(f"{s.where}.unscored_value={s.unscored_value} scores undecidable samples, but "
                        f"{CONFIG_SECTION}.undecidable_as_wrong=true trains them as wrong (0.0)")
    if problems:
        raise ValueError("the reward and the MathSE step's judge would decide differently (one verdict per path): "
                         + "; ".join(problems))
    return step


# ----------------------------------------------------------------------------- one verdict -> verl's result
def verdict_fields(judge: Any, verdict: Any) -> dict[str, Any]:
    """What the agent loop hands the reward about its verdict on an output (:data:`VERDICT_FIELD`):
    ``correct`` (True / False / None), ``reason``, ``reward`` (:meth:`Judge.reward_of`) and the judge
    reward's ``extras``."""
    extras = {k: _loggable(v) for k, v in dict(verdict.extras or {}).items()}
    if verdict.judgment is not None:  # an ORM judge's own judgment
        extras.setdefault("status", verdict.judgment.status)
        extras.setdefault("error_step", verdict.judgment.error_step)
    return {"correct": verdict.correct, "reason": verdict.reason, "reward": judge.reward_of(verdict),
            "extras": extras}


def verdict_result(fields: Mapping[str, Any], extras_keys: tuple[str, ...], unscored_value: float = 0.0
                   ) -> dict[str, Any]:
    """verl's per-sample result from a verdict (:func:`verdict_fields`); same keys for every sample.

        >>> verdict_result({"correct": None, "reason": "no_gold", "reward": None, "extras": {}}, ("reason",))
        {'score': 0.0, 'acc': 0.0, 'scored': False, 'reason': 'no_gold'}
    """
    reward = fields.get("reward")
    scored = reward is not None
    result: dict[str, Any] = {
        "score": float(reward) if scored else float(unscored_value),
        "acc": 1.0 if fields.get("correct") is True else 0.0,
        "scored": scored,
    }
    extras = dict(fields.get("extras") or {})
    if "reason" in extras_keys and extras.get("reason") is None:  # judged without the reward (no gold)
        extras["reason"] = fields.get("reason")
    for key in extras_keys:
        result[key] = extras.get(key)
    return result


def result_dict(reward: Reward, out: RewardOutput, unscored_value: float = 0.0) -> dict[str, Any]:
    """verl's per-sample result of a reward that decides nothing (``format``, a custom score):
    ``acc`` is its score (0.0 when it cannot score), always a number."""
    scored = out.score is not None
    result: dict[str, Any] = {
        "score": float(out.score) if scored else float(unscored_value),
        "acc": float(out.score) if scored else 0.0,
        "scored": scored,
    }
    for key in reward.extras_keys:
        result[key] = out.extras.get(key)
    return result


def carried_verdict(fields: Any) -> Optional[Mapping[str, Any]]:
    """The agent loop's verdict on an output, if its extra fields carry one."""
    fields = _plain(fields)
    value = fields.get(VERDICT_FIELD) if isinstance(fields, Mapping) else None
    return value if isinstance(value, Mapping) and "correct" in value else None


class Scorer:
    """One reward spec seen by verl: through the step's judge when it decides correctness, else plainly.

    ``judge`` is built on first use (a judged response from the agent loop needs none)."""

    def __init__(self, spec: Any, options: Mapping[str, Any] | None = None, step: Any = None,
                 reward_router_address: str | None = None, max_batch: int | None = None,
                 batch_window_s: float | None = None):
        from mathse_rl.step import deciding_parts, judge_reward_options, step_config, uses_orm

        spec, options = _plain(spec), dict(_plain(options) or {})
        self.spec = step.judge if step is not None else spec
        self.judged = step is not None or bool(deciding_parts(spec))
        if not self.judged:
            self.reward = reward_for(spec, options, reward_router_address)
            self.extras_keys = tuple(self.reward.extras_keys)
            self._step = None
            return
        if step is None:
            step = step_config({"judge": spec, "judge_options": options})
        if reward_router_address is not None and uses_orm(step.judge):  # verl's router serves the ORM judge
            effective = judge_reward_options(step)
            if not effective.get("endpoint") and not effective.get("reward_router_address"):
                step = step_config(step, judge_options={**effective, "reward_router_address": reward_router_address})
        batching = {"max_batch": max_batch} if max_batch else {}
        if batch_window_s is not None:
            batching["batch_window_ms"] = 1000.0 * batch_window_s
        self._step = step_config(step, **batching) if batching else step
        self._judge = None
        self.extras_keys = extras_keys_of(self.spec)

    @property
    def judge(self) -> Any:
        if self._judge is None:
            self._judge = _cached(["judge", _asdict(self._step)], lambda: _make_judge(self._step))
        return self._judge

    def result(self, fields: Mapping[str, Any], unscored_value: float) -> dict[str, Any]:
        return verdict_result(fields, self.extras_keys, unscored_value)

    def score_one(self, sample: RewardInput, carried: Any, unscored_value: float) -> dict[str, Any]:
        """One response, synchronously (``compute_score``)."""
        if not self.judged:
            return result_dict(self.reward, self.reward([sample])[0], unscored_value)
        if carried is not None:
            return self.result(carried, unscored_value)
        (verdict,) = self.judge.judge([problem_of(sample)], [sample.response])
        return self.result(verdict_fields(self.judge, verdict), unscored_value)

    async def ascore_one(self, sample: RewardInput, carried: Any, unscored_value: float) -> dict[str, Any]:
        """One response on an event loop; concurrent calls share one judge batch (:meth:`Judge.ajudge_one`)."""
        if not self.judged:
            out = (await self.reward.acall([sample]))[0]
            return result_dict(self.reward, out, unscored_value)
        if carried is not None:
            return self.result(carried, unscored_value)
        verdict = await self.judge.ajudge_one(problem_of(sample), sample.response)
        return self.result(verdict_fields(self.judge, verdict), unscored_value)


def extras_keys_of(spec: Any) -> tuple[str, ...]:
    """The extras keys a reward spec's outputs carry, read from the registry without building it
    (a composite names its parts' as :class:`~mathse_rl.rewards.WeightedReward` does)."""
    from mathse_rl.rewards.registry import _resolve, parse_spec

    whole = _resolve(spec.strip()) if isinstance(spec, str) else None
    if whole is not None:
        return tuple(getattr(whole, "extras_keys", ()))
    keys: list[str] = []
    for name, _ in parse_spec(spec):
        keys.append(f"{name}/score")
        keys.extend(f"{name}/{k}" for k in getattr(_resolve(name), "extras_keys", ()))
    return tuple(keys)


def _asdict(step: Any) -> dict[str, Any]:
    import dataclasses

    return dataclasses.asdict(step)


def _make_judge(step: Any) -> Any:
    from mathse_rl.step import Judge

    return Judge(step)


def _loggable(value: Any) -> Any:
    return value if value is None or isinstance(value, (str, int, float, bool)) else str(value)


def problem_of(sample: RewardInput) -> Problem:
    return Problem(id=str(sample.extra.get("index", "")), question=sample.question, gold=sample.gold,
                   images=tuple(sample.images), choices=sample.choices, data_source=sample.data_source)


def scorer_for(spec: Any = DEFAULT_REWARD, options: Mapping[str, Any] | None = None,
               reward_router_address: str | None = None, undecidable_as_wrong: bool = False) -> Scorer:
    """The :class:`Scorer` of ``compute_score``'s arguments, built once per process."""
    from mathse_rl.step import deciding_parts, step_config

    spec, options = _plain(spec), dict(_plain(options) or {})

    def build() -> Scorer:
        step = None
        if undecidable_as_wrong and deciding_parts(spec):  # the step's policy for undecidable samples
            step = step_config({"judge": spec, "judge_options": options, "undecidable_as_wrong": True})
        return Scorer(spec, options, step, reward_router_address=reward_router_address)

    return _cached(["scorer", spec, options, reward_router_address, bool(undecidable_as_wrong)], build)


# ----------------------------------------------------------------------------- verl's custom reward function
def sample_from_verl(data_source: Any, solution_str: str, ground_truth: Any,
                     extra_info: Mapping[str, Any] | None, question: str = "",
                     images: tuple[Any, ...] = ()) -> RewardInput:
    """A ``RewardInput`` from verl's per-sample fields (choices and question from ``extra_info``)."""
    extra = dict(_plain(extra_info) or {})
    choices = extra.get("choices")
    if choices is not None and not isinstance(choices, (list, tuple)):
        choices = list(choices) if hasattr(choices, "__iter__") and not isinstance(choices, str) else None
    gold = None if ground_truth is None else str(ground_truth)
    return RewardInput(
        question=question or str(extra.get("question") or ""),
        response=solution_str or "",
        gold=gold,
        choices=tuple(str(c) for c in choices) if choices else None,
        images=images,
        data_source=str(data_source or ""),
        extra=extra,
    )


def compute_score(data_source: Any, solution_str: str, ground_truth: Any, extra_info: Mapping[str, Any] | None = None,
                  reward: Any = DEFAULT_REWARD, reward_options: Mapping[str, Any] | None = None,
                  unscored_value: float = 0.0, reward_router_address: str | None = None,
                  undecidable_as_wrong: bool = False, **_verl_kwargs: Any) -> dict[str, Any]:
    """Score one response with the registry reward named ``reward`` (verl's custom reward function).

    ``reward_options`` go to the reward's factory; ``reward_router_address`` to rewards that
    take it; ``undecidable_as_wrong`` (the step's option, which this function cannot read from the
    ``mathse`` section) scores an undecidable response 0.0 as wrong (``scored=True``); other
    keyword arguments verl passes are accepted and ignored. A response the ``mathse_reflect`` loop
    judged (its verdict in ``extra_info``, where verl's reward managers put the loop's extra
    fields) is scored from that verdict.
    """
    scorer = scorer_for(reward, reward_options, reward_router_address, undecidable_as_wrong)
    sample = sample_from_verl(data_source, solution_str, ground_truth, extra_info)
    return scorer.score_one(sample, carried_verdict(extra_info), unscored_value)


async def compute_score_async(data_source: Any, solution_str: str, ground_truth: Any,
                              extra_info: Mapping[str, Any] | None = None, reward: Any = DEFAULT_REWARD,
                              reward_options: Mapping[str, Any] | None = None, unscored_value: float = 0.0,
                              reward_router_address: str | None = None, undecidable_as_wrong: bool = False,
                              **_verl_kwargs: Any) -> dict[str, Any]:
    """``compute_score`` as a coroutine, for rewards that call a model or a service (the ORM):
    verl awaits it instead of running it in a thread
    (``reward.custom_reward_function.name=compute_score_async``)."""
    scorer = scorer_for(reward, reward_options, reward_router_address, undecidable_as_wrong)
    sample = sample_from_verl(data_source, solution_str, ground_truth, extra_info)
    return await scorer.ascore_one(sample, carried_verdict(extra_info), unscored_value)
