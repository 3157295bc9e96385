"""Held-out evaluation: greedy accuracy with the verifier and pass@k from sampled paths.

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
        messages = [build_solve_messages(p, template) for p in batch]
        images = [p.images for p in batch]
        greedy = [r[0] for r in generator.generate(messages, images, n=1, temperature=0.0,
                                                   max_new_tokens=max_new_tokens)]
        results = judge.judge(batch, greedy)
        # A verdict may be undecidable (None: verifier timeout, judge failure): counted, never correct.
        correct += sum(r.correct is True for r in results)
        undecidable += sum(r.correct is None for r in results)
        examples.extend({"problem_id": p.id, "response": g, "correct": r.correct}
                        for p, g, r in zip(batch, greedy, results))
        if k > 0:
            samples = generator.generate(messages, images, n=k, temperature=temperature, max_new_tokens=max_new_tokens)
            flat_p = [p for p, s in zip(batch, samples) for _ in s]
            flat_r = [x for s in samples for x in s]
            flat = judge.judge(flat_p, flat_r)
            pos = 0
            for s in samples:
                c = sum(r.correct is True for r in flat[pos:pos + len(s)])
                pos += len(s)
                pass_sum += pass_at_k(len(s), c, k)
    out: dict[str, Any] = {"accuracy": correct / len(problems), "n": len(problems), "undecidable": undecidable,
                           "examples": examples}
    if k > 0:
        out[f"pass@{k}"] = pass_sum / len(problems)
    return out
