"""Benchmarks the method is judged by, scored by rules that reproduce the official numbers.

    mathse-rl eval --benchmark mathvista --data MathVista/data/testmini.json --model ckpt --out runs/mv
    mathse-rl eval --benchmark mathvista --data MathVista/data/testmini.json --responses output_bard.json

Each benchmark (``mathvista``, ``mathverse``, ``mathvision``, ``gsm8k``, ``math500``) reads its
release's own files (:mod:`mathse_rl.eval.data`), prompts with the release's prompt, scores with
the release's rules on top of :mod:`mathse_rl.verify` (no LLM call) and reports the release's
category axes (:mod:`mathse_rl.eval.report`). :mod:`mathse_rl.eval.run` generates (resumable) and
scores.

    >>> from mathse_rl.eval import get_benchmark, list_benchmarks
    >>> list_benchmarks()
    ['gsm8k', 'math500', 'mathverse', 'mathvision', 'mathvista']
"""

from mathse_rl.eval import mathverse, mathvision, mathvista, textsets  # noqa: F401  (register the benchmarks)
from mathse_rl.eval.base import BadRow, Benchmark, RowError, Scored, get_benchmark, list_benchmarks, register_benchmark
from mathse_rl.eval.data import load_benchmark, load_eval_set, parse_ref, ref_path

__all__ = [
    "BadRow", "Benchmark", "RowError", "Scored", "get_benchmark", "list_benchmarks", "register_benchmark",
    "load_benchmark", "load_eval_set", "parse_ref", "ref_path",
]
