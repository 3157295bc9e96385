"""Rewards by name: ``register_reward``, ``get_reward``, ``list_rewards``.

Names are what configs and users write. A name maps to a factory (a ``Reward``
subclass or any callable returning a ``Reward``) or, lazily, to an import path
``"package.module:attr"`` that is imported only when the name is used or listed.
Third-party packages add names through the entry-point group ``mathse_rl.rewards``
(``name = "their_pkg.rewards:MyReward"``).

>>> from mathse_rl.rewards import get_reward
>>> get_reward("verifier+format").name
'verifier+format'
>>> get_reward({"verifier": 0.9, "format": 0.1}).name
'0.9*verifier+0.1*format'
"""

from __future__ import annotations

import importlib
import inspect
import logging
import re
from importlib import metadata
from typing import Any, Callable, Mapping, Union

from mathse_rl.rewards.base import Reward

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "mathse_rl.rewards"

Factory = Callable[..., Reward]
Target = Union[Factory, str]

# name -> factory, or "module:attr" not imported yet
_REGISTRY: dict[str, Target] = {}
# lazy names whose import failed -> why (they are left out of list_rewards)
_UNAVAILABLE: dict[str, str] = {}
_entry_points_loaded = False


def register_reward(name: str, target: Target | None = None) -> Any:
    """Register a reward under ``name``.

    As a decorator on a ``Reward`` subclass or a factory function::

        @register_reward("length")
        class Length(Reward): ...

    or directly with an import path, resolved only when first needed::

        register_reward("orm", "mathse_rl.orm.reward:ORMReward")
    """
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"reward name must be a non-empty string, got {name!r}")
    if target is not None:
        _set(name, target)
        return target

    def decorator(factory: Factory) -> Factory:
        _set(name, factory)
        return factory

    return decorator


def _set(name: str, target: Target) -> None:
    previous = _REGISTRY.get(name)
    if isinstance(target, str) and previous is not None and not isinstance(previous, str):
        return  # already resolved (the module registered itself); keep the real factory
    if previous is not None and not isinstance(previous, str) and previous is not target:
        if getattr(previous, "__qualname__", None) != getattr(target, "__qualname__", None):
            logger.warning("reward %r re-registered: %r replaces %r", name, target, previous)
    _REGISTRY[name] = target
    _UNAVAILABLE.pop(name, None)


def unregister_reward(name: str) -> None:
    """Remove a name (tests use it to clean up throwaway rewards)."""
    _REGISTRY.pop(name, None)
    _UNAVAILABLE.pop(name, None)


def _load_entry_points() -> None:
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    try:
        eps = metadata.entry_points(group=ENTRY_POINT_GROUP)
    except Exception as exc:  # a broken installed distribution must not break the registry
        logger.warning("could not read entry points %r: %s", ENTRY_POINT_GROUP, exc)
        return
    for ep in eps:
        if ep.name in _REGISTRY:
            logger.warning("entry point reward %r (%s) ignored: the name is taken", ep.name, ep.value)
            continue
        _REGISTRY[ep.name] = ep.value


def _resolve(name: str) -> Factory | None:
    """The factory for ``name``, importing a lazy target; None if absent or unimportable."""
    _load_entry_points()
    target = _REGISTRY.get(name)
    if target is None and any(isinstance(t, str) for t in _REGISTRY.values()):
        list_rewards()  # importing lazy modules may register further names
        target = _REGISTRY.get(name)
    if target is None or not isinstance(target, str):
        return target
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
        # the module may have registered itself under this name on import; that wins
        if not isinstance(_REGISTRY.get(name), str):
            return _REGISTRY.get(name)  # type: ignore[return-value]
        factory = getattr(module, attr)
    except Exception as exc:
        _UNAVAILABLE[name] = f"{type(exc).__name__}: {exc}"
        return None
    _REGISTRY[name] = factory
    _UNAVAILABLE.pop(name, None)
    return factory


def list_rewards() -> list[str]:
    """The names ``get_reward`` accepts (lazy names only when their module imports)."""
    _load_entry_points()
    names = []
    for name in list(_REGISTRY):
        if _resolve(name) is not None:
            names.append(name)
    # a lazily imported module may register further names (e.g. a gated composite)
    return sorted(set(names) | {n for n, t in _REGISTRY.items() if not isinstance(t, str)})


def unavailable_rewards() -> dict[str, str]:
    """Registered lazy names whose module could not be imported, with the reason."""
    list_rewards()
    return dict(_UNAVAILABLE)


_WEIGHTED_PART = re.compile(r"^\s*(?:(?P<w>[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*\*\s*)?(?P<name>[^*]+?)\s*$")


def parse_spec(spec: str | Mapping[str, float]) -> list[tuple[str, float]]:
    """``"a+b"`` -> [(a, 1), (b, 1)]; ``"0.9*a+0.1*b"`` or ``{"a": 0.9, "b": 0.1}`` -> weighted."""
    if isinstance(spec, Mapping):
        parts = [(str(k), float(v)) for k, v in spec.items()]
    else:
        parts = []
        for piece in str(spec).split("+"):
            match = _WEIGHTED_PART.match(piece)
            if not match or not match.group("name"):
                raise ValueError(f"cannot read reward spec {spec!r} (expected 'a+b' or '0.9*a+0.1*b')")
            parts.append((match.group("name"), float(match.group("w") or 1.0)))
    if not parts:
        raise ValueError(f"empty reward spec {spec!r}")
    return parts


def _unknown(name: str) -> KeyError:
    known = ", ".join(list_rewards()) or "(none)"
    why = f" (its module failed to import: {_UNAVAILABLE[name]})" if name in _UNAVAILABLE else ""
    return KeyError(f"unknown reward {name!r}{why}; known rewards: {known}")


def _accepts(factory: Factory) -> tuple[set[str], bool]:
    """Keyword names the factory takes, and whether it takes **kwargs."""
    try:
        params = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):
        return set(), True
    names = {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    return names, any(p.kind is p.VAR_KEYWORD for p in params)


def _build(name: str, options: Mapping[str, Any]) -> Reward:
    factory = _resolve(name)
    if factory is None:
        raise _unknown(name)
    try:
        reward = factory(**options)
    except TypeError as exc:
        raise TypeError(f"reward {name!r} rejected options {sorted(options)}: {exc}") from exc
    if not isinstance(reward, Reward):
        raise TypeError(f"reward {name!r}: factory returned {type(reward).__name__}, not a Reward")
    reward.name = name  # the name the user wrote is what frameworks log (aliases included)
    return reward


def get_reward(spec: str | Mapping[str, float] | Reward, **options: Any) -> Reward:
    """Build the reward a name (or composite spec) stands for.

    * ``"verifier"`` with ``**options`` passed to its factory;
    * ``"verifier+format"``: equal-weight sum; ``"0.9*verifier+0.1*format"`` or
      ``{"verifier": 0.9, "format": 0.1}``: weighted sum. Options whose key is a part's
      name (a mapping) go to that part; other options go to every part that accepts them.
    * a ``Reward`` instance is returned as is.

    An unknown name raises ``KeyError`` listing the known names.
    """
    if isinstance(spec, Reward):
        return spec
    if isinstance(spec, str):
        name = spec.strip()
        _load_entry_points()
        if name not in _REGISTRY:
            list_rewards()  # importing lazy modules may register further names (e.g. "orm_gated")
        if name in _REGISTRY:  # includes registered composite-looking names such as "verifier+orm"
            return _build(name, options)
        if "+" not in name and "*" not in name:
            raise _unknown(name)
    from mathse_rl.rewards.composite import WeightedReward

    parts = parse_spec(spec)
    names = [n for n, _ in parts]
    per_part = {k: dict(v) for k, v in options.items() if k in names and isinstance(v, Mapping)}
    shared = {k: v for k, v in options.items() if k not in per_part}
    used: set[str] = set()
    built = []
    for part_name, weight in parts:
        factory = _resolve(part_name)
        if factory is None:
            raise _unknown(part_name)
        accepted, any_kw = _accepts(factory)
        mine = {k: v for k, v in shared.items() if any_kw or k in accepted}
        used |= set(mine)
        built.append((weight, _build(part_name, {**mine, **per_part.get(part_name, {})})))
    unused = set(shared) - used
    if unused:
        raise TypeError(f"no part of reward {spec!r} accepts options {sorted(unused)}")
    return WeightedReward(built, spec_name(parts))


def spec_name(parts: list[tuple[str, float]]) -> str:
    """The display name of a composite: 'a+b' for equal weights, else '0.9*a+0.1*b'."""
    if len({w for _, w in parts}) == 1 and parts[0][1] == 1.0:
        return "+".join(n for n, _ in parts)
    return "+".join(f"{w:g}*{n}" for n, w in parts)
