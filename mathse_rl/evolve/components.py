"""The loop's pluggable parts and their registries: generator, trainer, refiner (judge and critic: :mod:`mathse_rl.step`).

Each part is a small protocol; a name in the config picks an implementation from a
registry. Names may map to an import path (``"pkg.module:attr"``) that is imported only
when used, so the core never imports trl or vllm itself.

    >>> register_generator("echo", lambda config, model_path: EchoGenerator())   # doctest: +SKIP
    >>> get_generator("echo", config, "base")                                     # doctest: +SKIP

A caller may also pass objects directly to :func:`mathse_rl.evolve.run_evolve`.
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Protocol, Sequence, runtime_checkable

from mathse_rl.prompts import build_reflect_messages, build_solve_messages
# The judge and the critic are the MathSE step's (one implementation for every trainer).
from mathse_rl.step import Critic, Judge, PathVerdict, reward_input
from mathse_rl.types import Attempt, Judgment, Problem

logger = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- protocols
@runtime_checkable
class Generator(Protocol):
    """Writes responses for chat prompts with the current policy."""

    def generate(self, messages: Sequence[list[dict[str, Any]]], images: Sequence[Sequence[Any]], *,
                 n: int, temperature: float, max_new_tokens: int) -> list[list[str]]:
        """``n`` responses per prompt; ``images[i]`` are the PIL images of prompt ``i``."""
        ...

    def load(self, model_path: str) -> None:
        """Point the generator at a new checkpoint (after a fine-tune)."""
        ...

    # Optional: ``release()`` frees the generator's accelerator memory before a fine-tune; the
    # loop calls it when present and calls ``load`` again before the next generation.


@runtime_checkable
class Trainer(Protocol):
    """Fine-tunes a model on pool rows and returns the path of the new checkpoint."""

    def train(self, rows: Sequence["TrainRow"], init_model: str, output_dir: str) -> str:
        ...


@dataclass(frozen=True)
class TrainRow:
    """One SFT example: the solve prompt of a problem and an accepted path as the answer."""

    problem_id: str
    messages: list[dict[str, Any]]
    images: tuple[Any, ...]  # paths or PIL images, in prompt order
    response: str
    source: str


class Refiner(Protocol):
    """Writes corrected solutions from wrong paths and their critiques.

    Each refinement is a string or a :class:`mathse_rl.step.Generation` (which says whether the
    engine stopped on ``max_new_tokens``: such a refinement is never accepted). For strings,
    the loop counts tokens with the generator's tokenizer (:func:`text_token_counter`).
    """

    def refine(self, problems: Sequence[Problem], wrong: Sequence[str], critiques: Sequence[Judgment | None], *,
               n: int, temperature: float, max_new_tokens: int, template: str) -> list[list[Any]]:
        ...


class PolicyRefiner:
    """The policy reflects on its own wrong paths: the reflection prompt goes through the generator."""

    def __init__(self, generator: Generator):
        self.generator = generator

    def refine(self, problems, wrong, critiques, *, n, temperature, max_new_tokens, template):
        messages = [build_reflect_messages(p, w, c, template=template) for p, w, c in zip(problems, wrong, critiques)]
        images = [p.images for p in problems]
        return self.generator.generate(messages, images, n=n, temperature=temperature, max_new_tokens=max_new_tokens)


def text_token_counter(generator: Any) -> Callable[[str], int] | None:
    """Tokens in a generated text, by the generator's own tokenizer; None when it exposes none.

    A generator may define ``count_tokens(text)``; otherwise its ``processing`` / ``tokenizer``
    (a processor's ``.tokenizer`` included) or a vLLM ``llm.get_tokenizer()`` is used. A
    refinement that re-encodes to ``max_new_tokens`` tokens stopped on its budget.
    """
    count = getattr(generator, "count_tokens", None)
    if callable(count):
        return count
    tok = getattr(generator, "processing", None) or getattr(generator, "tokenizer", None)
    llm = getattr(generator, "llm", None)
    if tok is None and llm is not None and hasattr(llm, "get_tokenizer"):
        tok = llm.get_tokenizer()
    tok = getattr(tok, "tokenizer", tok)
    if tok is None or not callable(tok):
        return None
    return lambda text: len(tok(text, add_special_tokens=False)["input_ids"])


def solve_row(problem: Problem, response: str, source: str, template: str = "auto") -> TrainRow:
    return TrainRow(problem.id, build_solve_messages(problem, template), tuple(problem.images), response, source)


# ----------------------------------------------------------------------------- registries
Factory = Callable[..., Any]
_GENERATORS: dict[str, Factory | str] = {
    "hf": "mathse_rl.integrations.trl.backends:HFGenerator",
    "transformers": "mathse_rl.integrations.trl.backends:HFGenerator",
    "vllm": "mathse_rl.integrations.trl.backends:VLLMGenerator",
}
_TRAINERS: dict[str, Factory | str] = {
    "sft": "mathse_rl.integrations.trl.backends:SFTBackend",
}
_REFINERS: dict[str, Factory | str] = {
    "policy": lambda config, generator: PolicyRefiner(generator),
    "openai": "mathse_rl.evolve.openai_refiner:OpenAIRefiner",
}


def _resolve(table: dict[str, Factory | str], kind: str, name: str) -> Factory:
    if name not in table:
        raise KeyError(f"unknown {kind} {name!r}; known: {sorted(table)}")
    target = table[name]
    if isinstance(target, str):
        module, attr = target.split(":")
        target = getattr(importlib.import_module(module), attr)
        table[name] = target
    return target


def register_generator(name: str, factory: Factory | str) -> None:
    """``factory(config: EvolveConfig, model_path: str) -> Generator``."""
    _GENERATORS[name] = factory


def register_trainer(name: str, factory: Factory | str) -> None:
    """``factory(config: EvolveConfig) -> Trainer``."""
    _TRAINERS[name] = factory


def register_refiner(name: str, factory: Factory | str) -> None:
    """``factory(config: EvolveConfig, generator: Generator) -> Refiner``."""
    _REFINERS[name] = factory


def get_generator(name: str, config: Any, model_path: str) -> Generator:
    return _resolve(_GENERATORS, "generator", name)(config, model_path)


def get_trainer(name: str, config: Any) -> Trainer:
    return _resolve(_TRAINERS, "trainer", name)(config)


def get_refiner(name: str, config: Any, generator: Generator) -> Refiner:
    return _resolve(_REFINERS, "refiner", name)(config, generator)


def list_components() -> dict[str, list[str]]:
    return {"generator": sorted(_GENERATORS), "trainer": sorted(_TRAINERS), "refiner": sorted(_REFINERS)}


__all__ = [
    "Attempt", "Critic", "Generator", "Judge", "PathVerdict", "PolicyRefiner", "Refiner", "TrainRow", "Trainer",
    "get_generator", "get_refiner", "get_trainer", "list_components", "register_generator", "register_refiner",
    "register_trainer", "reward_input", "solve_row", "text_token_counter",
]
