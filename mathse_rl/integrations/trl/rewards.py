"""trl reward callables for rewards named in the registry.

``make_reward_func(name)`` returns what ``GRPOTrainer(reward_funcs=[...])`` takes: a callable
with trl's keyword interface (``prompts``, ``completions``, every dataset column,
``log_extra``, ``log_metric``, ...) that returns one ``float | None`` per completion. Its
``__name__`` is the reward's name, so trl logs ``rewards/<name>/mean``; swapping a reward is
changing that one string.

    >>> from mathse_rl.integrations.trl import make_reward_func
    >>> f = make_reward_func("verifier")
    >>> f.__name__
    'verifier'
    >>> f(prompts=["2+3?"], completions=["The answer to this problem is 5."], solution=["5"])
    [1.0]

Ready-made callables for a ``trl grpo`` YAML (``reward_funcs: [mathse_rl.integrations.trl.verifier]``):
``verifier``, ``format_reward``, and, when the ORM is installed, ``orm`` and ``verifier_orm``.
"""

from __future__ import annotations

import logging
from typing import Any, Mapping, Sequence

from mathse_rl.data.loaders import GOLD_COLUMNS, gold_of
from mathse_rl.rewards import Reward, get_reward
from mathse_rl.types import RewardInput, RewardOutput

logger = logging.getLogger(__name__)

# The reference answer follows the one gold-column rule (mathse_rl.data.loaders.gold_of), per row.
IMAGE_COLUMNS: tuple[str, ...] = ("images", "image")
# trl's own keyword arguments, never dataset columns.
_TRL_KWARGS = frozenset({"prompts", "completions", "completion_ids", "trainer_state", "log_extra",
                         "log_metric", "environments"})


def _text(content: Any) -> str:
    """The text of a message content: a string, or the text parts of a list of parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence):
        return "".join(p.get("text", "") or "" for p in content if isinstance(p, Mapping))
    return str(content)


def completion_text(completion: Any) -> str:
    """Plain completion -> itself; conversational -> the text of its assistant messages."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, Mapping):
        return _text(completion.get("content"))
    return "".join(_text(m.get("content")) for m in completion
                   if isinstance(m, Mapping) and m.get("role", "assistant") == "assistant")


def prompt_text(prompt: Any) -> str:
    """Plain prompt -> itself; conversational -> the text of its last user message."""
    if prompt is None or isinstance(prompt, str):
        return prompt or ""
    users = [m for m in prompt if isinstance(m, Mapping) and m.get("role") == "user"]
    return _text(users[-1].get("content")) if users else ""


def _as_images(value: Any) -> tuple[Any, ...]:
    if value is None:
        return ()
    if isinstance(value, (list, tuple)):
        return tuple(v for v in value if v is not None)
    return (value,)


class RewardFunc:
    """A registry reward seen through trl's reward-function interface (synchronous form)."""

    def __init__(self, name: str | Mapping[str, float], *, gold_column: str | Sequence[str] | None = None,
                 choices_column: str = "choices", image_columns: Sequence[str] = IMAGE_COLUMNS,
                 log_extras: bool = True, reward_options: Mapping[str, Any] | None = None):
        self.spec = name                                   # registry name or composite spec
        self.reward_options = dict(reward_options or {})   # passed to the reward's factory
        self.gold_columns = ((gold_column,) if isinstance(gold_column, str)
                             else tuple(gold_column or GOLD_COLUMNS))  # where the reference answer is
        self.choices_column = choices_column               # column with multiple-choice options
        self.image_columns = tuple(image_columns)          # columns with the sample's image(s)
        self.log_extras = log_extras                       # send extracted answers/reasons to log_extra
        self._reward: Reward | None = None
        self.__name__ = self.reward.name

    @property
    def reward(self) -> Reward:
        if self._reward is None:
            self._reward = get_reward(self.spec, **self.reward_options)
        return self._reward

    # pickled without the built reward (it may hold a pool or a model); rebuilt on first use
    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_reward": None}

    def __repr__(self) -> str:
        return f"<trl reward {self.__name__!r}>"

    def samples(self, prompts: Sequence[Any] | None, completions: Sequence[Any],
                columns: Mapping[str, Any]) -> list[RewardInput]:
        """One ``RewardInput`` per completion from trl's keyword arguments."""
        n = len(completions)
        gold_cols = [c for c in self.gold_columns if columns.get(c) is not None]
        image_col = next((c for c in self.image_columns if c in columns), None)

        def column(key: str | None, i: int) -> Any:
            if key is None or key not in columns or columns[key] is None:
                return None
            return columns[key][i]

        prompts = list(prompts) if prompts is not None else [None] * n
        out = []
        for i in range(n):
            choices = column(self.choices_column, i)
            out.append(RewardInput(
                question=prompt_text(prompts[i]),
                response=completion_text(completions[i]),
                gold=gold_of({c: columns[c][i] for c in gold_cols}, gold_cols),
                choices=tuple(choices) if choices else None,
                images=_as_images(column(image_col, i)),
                data_source=str(column("data_source", i) or ""),
                extra={"index": i},
            ))
        return out

    def _report(self, outs: list[RewardOutput], log_extra: Any, log_metric: Any) -> list[float | None]:
        name = self.__name__
        if self.log_extras and log_extra is not None:
            for key in self.reward.extras_keys:
                log_extra(f"{name}/{key}", [_loggable(o.extras.get(key)) for o in outs])
        if log_metric is not None and outs:
            log_metric(f"{name}/unscored_frac", sum(o.score is None for o in outs) / len(outs))
        return [None if o.score is None else float(o.score) for o in outs]

    def __call__(self, prompts: Sequence[Any] | None = None, completions: Sequence[Any] = (),
                 log_extra: Any = None, log_metric: Any = None, **kwargs: Any) -> list[float | None]:
        columns = {k: v for k, v in kwargs.items() if k not in _TRL_KWARGS}
        outs = self.reward(self.samples(prompts, completions, columns))
        return self._report(outs, log_extra, log_metric)


class AsyncRewardFunc(RewardFunc):
    """The ``async def`` form, for rewards that call a model or a service: trl awaits it
    on its event loop and overlaps it with the other async reward functions."""

    async def __call__(self, prompts: Sequence[Any] | None = None, completions: Sequence[Any] = (),
                       log_extra: Any = None, log_metric: Any = None, **kwargs: Any) -> list[float | None]:
        columns = {k: v for k, v in kwargs.items() if k not in _TRL_KWARGS}
        outs = await self.reward.acall(self.samples(prompts, completions, columns))
        return self._report(outs, log_extra, log_metric)


class JudgeRewardFunc(RewardFunc):
    """The reward derived from the MathSE step's judge, in trl's reward-function interface.

    reward(c) is :meth:`mathse_rl.step.Judge.reward_of` of the judge's verdict on c: the same
    judgment the step accepts, critiques and reflects on, with the same options. Inside
    ``MathSETrainer`` the verdicts the step has just given the batch's completions are used as they
    are (:meth:`remember`), so nothing is judged twice (an ORM is not asked again, a verifier timeout
    cannot land differently); on completions it has not judged, the same judge judges them.

        >>> from mathse_rl.step import Judge
        >>> f = JudgeRewardFunc(Judge())
        >>> f(prompts=["?", "?"], completions=["So there are 5 bars.", "The answer to this problem is 5."],
        ...   solution=["5", "5"])
        [0.0, 1.0]
    """

    def __init__(self, judge: Any, *, name: str | None = None, gold_column: str | Sequence[str] | None = None,
                 choices_column: str = "choices", image_columns: Sequence[str] = IMAGE_COLUMNS,
                 log_extras: bool = True):
        self.judge = judge
        self._recent: tuple[list[str], list[Any]] | None = None  # the step's last verdicts, by completion
        super().__init__(judge.name, gold_column=gold_column, choices_column=choices_column,
                         image_columns=image_columns, log_extras=log_extras)
        self.__name__ = name or judge.name

    @property
    def reward(self) -> Reward:
        return self.judge.reward

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_recent": None}

    def remember(self, texts: Sequence[str], verdicts: Sequence[Any]) -> None:
        """The step's verdicts on the completions trl is about to score (in the same order)."""
        self._recent = (list(texts), list(verdicts))

    def verdicts(self, samples: Sequence[RewardInput]) -> list[Any]:
        from mathse_rl.types import Problem

        texts = [s.response for s in samples]
        if self._recent is not None and self._recent[0] == texts:
            return self._recent[1]
        problems = [Problem(id=str(s.extra.get("index", i)), question=s.question, gold=s.gold, images=s.images,
                            choices=s.choices, data_source=s.data_source) for i, s in enumerate(samples)]
        return self.judge.judge(problems, texts)

    def __call__(self, prompts: Sequence[Any] | None = None, completions: Sequence[Any] = (),
                 log_extra: Any = None, log_metric: Any = None, **kwargs: Any) -> list[float | None]:
        columns = {k: v for k, v in kwargs.items() if k not in _TRL_KWARGS}
        verdicts = self.verdicts(self.samples(prompts, completions, columns))
        outs = [RewardOutput(self.judge.reward_of(v), dict(v.extras)) for v in verdicts]
        return self._report(outs, log_extra, log_metric)


def bind_judge_rewards(reward_funcs: Any, judge: Any, *, judge_setting: str = "MathSEConfig") -> list[Any]:
    """trl ``reward_funcs`` for a trainer whose MathSE step judges with ``judge``: one verdict per path.

    Each of our reward functions that decides correctness (``verifier``, ``orm``, ... alone or in a
    composite) is replaced by a :class:`JudgeRewardFunc` on ``judge`` (same name, so trl logs it as
    before): what it trains is derived from the step's verdict. It must name the judge's reward, and
    options it sets explicitly must be the judge's; otherwise a ``ValueError`` names both settings.
    Shaping rewards (``format``) are kept; callables of other origins are kept with a warning (their
    agreement with the judge cannot be checked).
    """
    from mathse_rl.step import deciding_parts, deciding_settings, verdict_mismatches

    single = not isinstance(reward_funcs, (list, tuple))
    funcs = [reward_funcs] if single else list(reward_funcs)
    out, problems = [], []
    for i, f in enumerate(funcs):
        where = "reward_funcs" if single else f"reward_funcs[{i}]"
        if isinstance(f, JudgeRewardFunc):
            other = f.judge
            if other is not judge and (other.name != judge.name or other.config.undecidable_as_wrong !=
                                       judge.config.undecidable_as_wrong or
                                       deciding_settings(other.reward) != deciding_settings(judge.reward)):
                problems.append(f"{where} {f.__name__!r} derives its reward from another judge ({other.name!r}) "
                                f"than {judge_setting}'s ({judge.name!r})")
            out.append(f)
        elif not isinstance(f, RewardFunc):
            logger.warning("%s %r is not a mathse-rl reward: its agreement with the step's judge %r is not checked",
                           where, getattr(f, "__name__", f), judge.name)
            out.append(f)
        elif not deciding_parts(f.spec):  # a shaping reward: no verdict of its own
            out.append(f)
        else:
            mismatches = verdict_mismatches(f.spec, f.reward_options, judge, reward_setting=f"{where} {f.__name__!r}",
                                            judge_setting=judge_setting)
            problems.extend(mismatches)
            out.append(f if mismatches else JudgeRewardFunc(
                judge, name=f.__name__, gold_column=f.gold_columns, choices_column=f.choices_column,
                image_columns=f.image_columns, log_extras=f.log_extras))
    if problems:
        raise ValueError("the GRPO reward and the MathSE step's judge would decide differently (one verdict per "
                         "path): " + "; ".join(problems))
    return out[0] if single else out


def _loggable(value: Any) -> Any:
    return value if value is None or isinstance(value, (str, int, float, bool)) else str(value)


def make_reward_func(name: str | Mapping[str, float], *, gold_column: str | Sequence[str] | None = None,
                     choices_column: str = "choices", image_columns: Sequence[str] = IMAGE_COLUMNS,
                     log_extras: bool = True, **reward_options: Any) -> RewardFunc:
    """A trl reward function for a registry name (``"verifier"``, ``"verifier+format"``,
    ``{"verifier": 0.9, "format": 0.1}``); ``reward_options`` go to the reward's factory.

    The gold answer is read per row from the first of ``gold_column`` (a name or a list; default
    :data:`~mathse_rl.data.loaders.GOLD_COLUMNS`: ``answer``, ``gold``, ``ground_truth``, then
    ``solution``) holding a value; a missing or unusable gold gives ``None`` so trl leaves the
    sample out.
    The result is ``async`` when the reward is (it calls a model or a service).
    """
    kwargs = dict(gold_column=gold_column, choices_column=choices_column, image_columns=image_columns,
                  log_extras=log_extras, reward_options=reward_options)
    probe = RewardFunc(name, **kwargs)
    if not probe.reward.is_async:
        return probe
    func = AsyncRewardFunc.__new__(AsyncRewardFunc)
    func.__dict__.update(probe.__dict__)
    return func


# Ready-made callables for dotted paths in trl configs.
verifier = make_reward_func("verifier")
format_reward = make_reward_func("format")

# Built on first access: they exist only when the ORM's reward is installed.
_ON_DEMAND = {"orm": "orm", "verifier_orm": "verifier+orm"}


def __getattr__(attr: str) -> RewardFunc:
    if attr not in _ON_DEMAND:
        raise AttributeError(f"module {__name__!r} has no attribute {attr!r}")
    try:
        func = make_reward_func(_ON_DEMAND[attr])
    except KeyError as exc:
        raise AttributeError(f"{attr}: {exc.args[0] if exc.args else exc}") from None
    globals()[attr] = func
    return func
