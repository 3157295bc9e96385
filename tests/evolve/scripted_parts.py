"""Components for loop tests that need no model: a scripted policy and a recording trainer.

They are real implementations of the loop's protocols (what the demo's programmatic teacher
is too); the trl backends are exercised against the tiny VLM in ``test_e2e_trl.py``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Callable

from PIL import Image

from mathse_rl.types import Attempt, Problem

_NUMS = re.compile(r"What is (\d+) \+ (\d+)\?")


def make_problems(n: int, prefix: str = "q", start: int = 0) -> list[Problem]:
    """``n`` addition questions, each with a small coloured image."""
    out = []
    for i in range(start, start + n):
        a, b = i + 1, 2 * i + 3
        out.append(Problem(id=f"{prefix}{i}", question=f"What is {a} + {b}?", gold=str(a + b),
                           images=(Image.new("RGB", (28, 28), (10 * i % 255, 80, 160)),)))
    return out


def solution(a: int, b: int, answer: int, tag: str = "") -> str:
    return f"Step 1: add {a} and {b}{tag}. The answer to this problem is {answer}."


def model_round(path: str) -> int:
    """m0/base -> 0, r1 -> 1, ..., final -> 99 (read from the checkpoint folder name)."""
    name = Path(path).name
    if name.startswith("r") and name[1:].isdigit():
        return int(name[1:])
    return 99 if name == "final" else 0


# rule(model_round, a, b, sample_index, reflecting) -> correct?
Rule = Callable[[int, int, int, int, bool], bool]


def default_rule(r: int, a: int, b: int, k: int, reflecting: bool) -> bool:
    if reflecting:
        return (a + b) % 2 == 0  # some refinements still fail
    if a >= 11:  # held-out questions: accuracy grows with the rounds (0.5 with M0, then 1.0)
        return a - 11 <= r
    return (a + r + k) % 3 == 0  # later models solve other questions


class ScriptedGenerator:
    """A policy whose answers depend only on (model, question, sample index): fully reproducible."""

    def __init__(self, rule: Rule = default_rule):
        self.rule = rule
        self.model = "base"
        self.calls: list[tuple[str, int]] = []

    def load(self, model_path: str) -> None:
        self.model = model_path

    def generate(self, messages, images, *, n, temperature, max_new_tokens):
        out = []
        for m in messages:
            text = m[-1]["content"][-1]["text"] if isinstance(m[-1]["content"], list) else m[-1]["content"]
            a, b = map(int, _NUMS.search(text).groups())
            reflecting = "previous solution" in text.lower()
            self.calls.append((Path(self.model).name, len(messages)))
            rows = []
            for k in range(n if temperature > 0 else 1):
                ok = self.rule(model_round(self.model), a, b, k, reflecting)
                tag = f" (reflected{k})" if reflecting else f" (try {k})"
                rows.append(solution(a, b, a + b if ok else a + b + 1, tag))
            out.append(rows)
        return out


class RecordingTrainer:
    """'Trains' by writing the rows it was given into the checkpoint folder."""

    def __init__(self):
        self.calls: list[dict] = []

    def train(self, rows, init_model, output_dir):
        out = Path(output_dir)
        out.mkdir(parents=True, exist_ok=True)
        data = [{"problem_id": r.problem_id, "source": r.source, "response": r.response,
                 "images": [str(i) for i in r.images]} for r in rows]
        (out / "rows.json").write_text(json.dumps(data))
        self.calls.append({"init": init_model, "out": str(out), "rows": len(rows)})
        return str(out)


class TeacherRefiner:
    """A teacher that always writes the right solution (the paper's GPT-4o role)."""

    def refine(self, problems, wrong, critiques, *, n, temperature, max_new_tokens, template):
        outs = []
        for p in problems:
            a, b = map(int, _NUMS.search(p.question).groups())
            outs.append([solution(a, b, a + b, " (teacher)")])
        return outs


def seed_for(problems: list[Problem]) -> list[Attempt]:
    """Teacher solutions: right for even-numbered problems, wrong for odd ones (the judge filters)."""
    out = []
    for i, p in enumerate(problems):
        a, b = map(int, _NUMS.search(p.question).groups())
        out.append(Attempt(p.id, solution(a, b, a + b if i % 2 == 0 else a + b + 2, " (seed)"), "distilled"))
    return out


def scripted_config(out: Path, **fields):
    from mathse_rl.evolve import load_config

    base = {"model": "base", "output_dir": str(out), "rounds": 2,
            "generate": {"n": 2, "chunk_size": 2, "batch_size": 2, "max_new_tokens": 16},
            "eval": {"k": 2}, "tracking": {"report_to": ["none"], "progress": False},
            "reflect": {"refiner": "policy"}}  # the scripted policy reflects; the default (auto) needs a teacher
    return load_config(defaults=base, **fields)
