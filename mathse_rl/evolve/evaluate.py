"""Held-out evaluation: greedy accuracy with the verifier and pass@k from sampled paths.

Problems read from a benchmark's release (``data.eval=mathvista:testmini:PATH``, see
:mod:`mathse_rl.eval`) are asked with the benchmark's own prompt and scored by its own rules, so
the accuracy a run reports is the one the benchmark reports; the result then also holds the
benchmark's per-category tables under ``benchmarks``. Other problems use the solve prompt and
the judge.

    >>> pass_at_k(n=4, c=1, k=2)
    0.5
"""

from __future__ import annotations

from math import comb
from typing import Any, Sequence

from mathse_rl.evolve.components import Generator, Judge
from mathse_rl.prompts import build_solve_messages
from mathse_rl.types import Problem


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from ``n`` samples of which ``c`` are correct."""
    if k <= 0 or n <= 0:
        return 0.0
    k = min(k, n)
    if n - c < k:
        return 1.0
    return 1.0 - comb(n - c, k) / comb(n, k)


def _benchmark(problem: Problem) -> Any:
    """The benchmark a problem was read from (None for a plain held-out problem)."""
    name = problem.meta.get("benchmark") if problem.meta else None
    if not name:
        return None
    from mathse_rl.eval import get_benchmark

    return get_benchmark(name)


def _messages(problem: Problem, bench: Any, template: str) -> list[dict[str, Any]]:
    if bench is None:
        return build_solve_messages(problem, template)
    from mathse_rl.eval.run import messages_for

    return messages_for(bench, problem, "official")


def _verdicts(judge: Judge, problems: Sequence[Problem], benches: Sequence[Any], responses: Sequence[str]
              ) -> list[bool | None]:
    """Correct / wrong / undecidable (None) per response: the benchmark's rules, else the judge."""
    out: list[bool | None] = [None] * len(problems)
    plain = [i for i, b in enumerate(benches) if b is None]
    if plain:
        for i, r in zip(plain, judge.judge([problems[i] for i in plain], [responses[i] for i in plain])):
            out[i] = r.correct
    for i, b in enumerate(benches):
        if b is not None:
            out[i] = bool(b.score(problems[i], responses[i]).correct)
    return out


def evaluate(generator: Generator, judge: Judge, problems: Sequence[Problem], *, k: int = 0,
             temperature: float = 0.7, max_new_tokens: int = 512, batch_size: int = 64,
             progress: bool = False, template: str = "auto") -> dict[str, Any]:
    """Greedy accuracy (one path at temperature 0) and, when ``k`` > 0, pass@k over ``k`` samples."""
    from tqdm.auto import tqdm

    if not problems:
        return {"accuracy": None, "n": 0}
    correct = undecidable = 0
    pass_sum = 0.0
    examples: list[dict[str, Any]] = []
    for start in tqdm(range(0, len(problems), batch_size), desc="eval", disable=not progress, leave=False):
        batch = list(problems[start:start + batch_size])
        benches = [_benchmark(p) for p in batch]
        messages = [_messages(p, b, template) for p, b in zip(batch, benches)]
        images = [p.images for p in batch]
        greedy = [r[0] for r in generator.generate(messages, images, n=1, temperature=0.0,
                                                   max_new_tokens=max_new_tokens)]
        results = _verdicts(judge, batch, benches, greedy)
        # A verdict may be undecidable (None: verifier timeout, judge failure): counted, never correct.
        correct += sum(r is True for r in results)
        undecidable += sum(r is None for r in results)
        examples.extend({"problem_id": p.id, "response": g, "correct": r} for p, g, r in zip(batch, greedy, results))
        if k > 0:
            samples = generator.generate(messages, images, n=k, temperature=temperature, max_new_tokens=max_new_tokens)
            flat_i = [i for i, s in enumerate(samples) for _ in s]
            flat = _verdicts(judge, [batch[i] for i in flat_i], [benches[i] for i in flat_i],
                             [x for s in samples for x in s])
            pos = 0
            for s in samples:
                c = sum(r is True for r in flat[pos:pos + len(s)])
                pos += len(s)
                pass_sum += pass_at_k(len(s), c, k)
    out: dict[str, Any] = {"accuracy": correct / len(problems), "n": len(problems), "undecidable": undecidable,
                           "examples": examples}
    if k > 0:
        out[f"pass@{k}"] = pass_sum / len(problems)
    tables = benchmark_tables(problems, examples)
    if tables:
        out["benchmarks"] = tables
    return out


def benchmark_tables(problems: Sequence[Problem], examples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """``<benchmark>:<split>`` -> overall and per-category accuracy (percent), for benchmark problems."""
    from mathse_rl.eval import report

    verdict = {e["problem_id"]: e["correct"] for e in examples}
    groups: dict[str, tuple[Any, list[dict[str, Any]]]] = {}
    for p in problems:
        bench = _benchmark(p)
        if bench is None:
            continue
        key = f"{bench.name}:{p.meta.get('split', '')}"
        groups.setdefault(key, (bench, []))[1].append(
            {"correct": verdict.get(p.id) is True, "categories": p.meta.get("categories") or {}})
    return {key: {**report.overall(rows), "categories": report.tables(rows, bench.axes)}
            for key, (bench, rows) in groups.items()}
