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

from typing import Any, Mapping, Sequence

from mathse_rl.data.loaders import GOLD_COLUMNS, gold_of
from mathse_rl.rewards import Reward, get_reward
from mathse_rl.types import RewardInput, RewardOutput

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
