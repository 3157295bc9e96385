"""What every benchmark provides, and the registry that names them.

A benchmark reads the files its release ships (in the release's own schema) into
:class:`~mathse_rl.types.Problem` records, writes the prompt a model is asked, scores one
response by the benchmark's own rules (with :mod:`mathse_rl.verify` extracting and comparing
the answer, never an LLM), and says which categories a problem belongs to, in the axes the
benchmark reports (MathVista: question type, task, skills, grade, ...).

    >>> from mathse_rl.eval import get_benchmark
    >>> bench = get_benchmark("gsm8k")
    >>> p = bench.problem({"question": "2 + 3?", "answer": "2 + 3 = 5\\n#### 5"}, 0, "test")
    >>> bench.score(p, "So the answer is 5.").correct
    True
    >>> get_benchmark("mathvist")                                    # doctest: +IGNORE_EXCEPTION_DETAIL
    Traceback (most recent call last):
    KeyError: "unknown benchmark 'mathvist'; known: [...]; did you mean 'mathvista'?"
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from mathse_rl.types import Problem

# Problem.meta keys every benchmark fills (the rest is the benchmark's own).
BENCHMARK = "benchmark"  # the benchmark's registry name
SPLIT = "split"  # the release split the row came from
CATEGORIES = "categories"  # axis -> value, or a list of values (MathVista's skills)


class RowError(ValueError):
    """A row that cannot be used as it is (malformed, missing field, missing image); the message says why."""


@dataclass(frozen=True)
class BadRow:
    """A row that was not scored, and why (listed in the results, never dropped silently)."""

    id: str
    reason: str

    def as_dict(self) -> dict[str, str]:
        return {"id": self.id, "reason": self.reason}


@dataclass(frozen=True)
class Scored:
    """A benchmark's verdict on one response.

    ``prediction`` is the answer in the benchmark's own terms (the option's text, the number at
    the benchmark's precision); ``extraction`` is what the verifier read from the response;
    ``reason`` why (the verifier's reason, or the benchmark rule that decided: ``precision``).
    ``correct`` is None where the answers are not public (MathVista test)."""

    correct: bool | None
    prediction: str | None
    extraction: str | None
    reason: str


class Benchmark:
    """Base class of a benchmark; subclasses fill in the class attributes and the methods below.

    Subclasses keep the benchmark's own rules; the helpers here (reading, tables, running) are shared.
    """

    name: str = ""
    title: str = ""  # the benchmark's own name, for tables
    splits: tuple[str, ...] = ("test",)
    default_split: str = "test"
    hidden_answer_splits: tuple[str, ...] = ()  # splits whose answers are not public (a submission file instead)
    axes: tuple[str, ...] = ()  # category axes, in the order the benchmark reports them
    prompt_styles: tuple[str, ...] = ("official", "ours")  # the first is the default
    multimodal: bool = True
    source: str = ""  # where users download the files (documented, never committed)
    license: str = ""

    # ------------------------------------------------------------------ reading
    def problem(self, row: Mapping[str, Any], index: int, split: str) -> Problem:
        """One row of the release's file -> Problem (``RowError`` with the reason when it is unusable).

        Image references stay as they are in the row (a relative path, or the ``{"bytes", "path"}``
        cell of a parquet file); :func:`mathse_rl.eval.data.load_benchmark` resolves them."""
        raise NotImplementedError

    def row_id(self, row: Mapping[str, Any], index: int) -> str:
        """The id a row is known by (responses files refer to it)."""
        for key in ("pid", "id", "sample_index", "unique_id"):
            if row.get(key) not in (None, ""):
                return str(row[key])
        return str(index)

    def outputs(self, data: Any) -> dict[str, str] | None:
        """Responses from a file in this benchmark's own output format (``id -> response``), or
        None when ``data`` (the parsed file) is not in that format."""
        return None

    # ------------------------------------------------------------------ prompting
    def prompt(self, problem: Problem, style: str = "official") -> str:
        """The text of the user turn (images go before it as image parts)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ scoring
    def score(self, problem: Problem, response: str) -> Scored:
        """The benchmark's verdict on one response."""
        raise NotImplementedError

    def categories(self, problem: Problem) -> dict[str, Any]:
        return dict(problem.meta.get(CATEGORIES) or {})

    def has_answers(self, split: str) -> bool:
        return split not in self.hidden_answer_splits

    def check_split(self, split: str) -> str:
        if split not in self.splits:
            raise ValueError(f"{self.name} has no split {split!r}; its splits: {list(self.splits)}")
        return split


_REGISTRY: dict[str, Callable[[], Benchmark]] = {}


def register_benchmark(name: str) -> Callable[[type[Benchmark]], type[Benchmark]]:
    """Class decorator: ``@register_benchmark("mathvista")``; the class is built on lookup."""

    def decorator(cls: type[Benchmark]) -> type[Benchmark]:
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return decorator


def get_benchmark(name: str) -> Benchmark:
    """The benchmark registered as ``name``; an unknown name lists the known ones."""
    key = str(name).strip().lower()
    if key not in _REGISTRY:
        near = difflib.get_close_matches(key, list(_REGISTRY), n=1)
        hint = f"; did you mean {near[0]!r}?" if near else ""
        raise KeyError(f"unknown benchmark {name!r}; known: {sorted(_REGISTRY)}{hint}")
    return _REGISTRY[key]()


def list_benchmarks() -> list[str]:
    return sorted(_REGISTRY)


def first(row: Mapping[str, Any], names: Sequence[str]) -> Any:
    """The first of ``names`` present in ``row`` with a value."""
    for n in names:
        if row.get(n) is not None:
            return row[n]
    return None


def require(row: Mapping[str, Any], *names: str) -> None:
    """``RowError`` naming the fields ``row`` lacks."""
    missing = [n for n in names if n not in row]
    if missing:
        raise RowError(f"malformed row: missing field{'s' if len(missing) > 1 else ''} {', '.join(missing)}")
