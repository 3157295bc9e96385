"""A small text-only task: counting stories, with step-by-step teacher solutions.

Nobody tuned the loop for it; it exists to try the loop's defaults as a new user would.
A story names a person, a thing and two or three amounts; the question asks how many
are left or there are in total. Every amount is in the text (no image), answers are
0-27, and each arithmetic operation is one step of the teacher's solution:

    Ben has 7 shells. Ben finds 5 more shells and then gives away 3 shells.
    How many shells does Ben have now?

    Step 1: 7 + 5 = 12.
    Step 2: 12 - 3 = 9.
    The answer to this problem is 9.

A share of the problems is multiple choice (four options, the gold answer is the letter;
one more step names the option). The default split sizes follow the setting MathSE is
for: a small teacher-solved seed set (100), a larger pool of questions with answers only
(200) and a held-out set (150). Everything is deterministic in ``seed``; the three splits
draw from disjoint random streams.

    >>> task = make_task(seed=0)
    >>> len(task.seed), len(task.pool), len(task.heldout)
    (100, 200, 150)
    >>> print(teacher_solution(task.seed[0]))  # doctest: +SKIP
    Step 1: 4 + 6 = 10.
    The answer to this problem is 10.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from mathse_rl.prompts import ANSWER_PHRASE, build_solve_messages
from mathse_rl.types import Attempt, Problem

DATA_SOURCE = "mathse_counting_stories"
NAMES = ("Ann", "Ben", "Cara", "Dan", "Eva", "Finn")
THINGS = ("apples", "shells", "cards", "pens", "stickers", "marbles")
LETTERS = "ABCD"
_SPLITS = {"seed": 11, "pool": 23, "heldout": 37}

# kind -> (operators, story with {n} name, {t} thing, {a} {b} {c} amounts, question)
KINDS: dict[str, tuple[tuple[str, ...], str]] = {
    "gain": (("+",), "{n} has {a} {t}. {n} gets {b} more {t}. How many {t} does {n} have now?"),
    "lose": (("-",), "{n} has {a} {t}. {n} gives away {b} {t}. How many {t} does {n} have now?"),
    "gain_lose": (("+", "-"), "{n} has {a} {t}. {n} finds {b} more {t} and then gives away {c} {t}. "
                              "How many {t} does {n} have now?"),
    "gain_gain": (("+", "+"), "{n} has {a} {t}. {n} gets {b} more {t} and then {c} more {t}. "
                              "How many {t} does {n} have now?"),
}


@dataclass(frozen=True)
class Task:
    """The three splits and the teacher's solutions of the seed split."""

    seed: list[Problem]  # teacher-solved questions (they start the pool)
    pool: list[Problem]  # questions with answers only, mined by the rounds
    heldout: list[Problem]  # evaluation only

    @property
    def train(self) -> list[Problem]:
        """``data.train`` of the loop: the seed questions and the pool questions."""
        return self.seed + self.pool

    def seed_attempts(self) -> list[Attempt]:
        return [teacher_attempt(p) for p in self.seed]


def _apply(a: int, op: str, b: int) -> int:
    return a + b if op == "+" else a - b


def make_problem(index: int, split: str = "pool", seed: int = 0, mc_rate: float = 0.2) -> Problem:
    """The ``index``-th problem of ``split`` for ``seed`` (deterministic)."""
    if split not in _SPLITS:
        raise ValueError(f"unknown split {split!r}; known: {sorted(_SPLITS)}")
    rng = random.Random(f"stories:{seed}:{_SPLITS[split]}:{index}")
    kind = rng.choice(sorted(KINDS))
    ops, story = KINDS[kind]
    while True:  # amounts 1-9; no running value below zero
        amounts = [rng.randint(1, 9) for _ in range(len(ops) + 1)]
        partials, acc = [], amounts[0]
        for op, x in zip(ops, amounts[1:]):
            acc = _apply(acc, op, x)
            partials.append(acc)
        if min(partials) >= 0:
            break
    name, thing = rng.choice(NAMES), rng.choice(THINGS)
    question = story.format(n=name, t=thing, a=amounts[0], b=amounts[1], c=amounts[2] if len(amounts) > 2 else "")
    value = partials[-1]
    choices = letter = None
    if rng.random() < mc_rate:
        rank = rng.randrange(min(4, value + 1))  # options stay >= 0
        options = [str(value + i - rank) for i in range(4)]
        rng.shuffle(options)
        choices, letter = tuple(options), LETTERS[options.index(str(value))]
    meta: dict[str, Any] = {"kind": kind, "amounts": amounts, "ops": list(ops), "partials": partials,
                            "value": value, "letter": letter}
    return Problem(id=f"stories-{split}-{seed}-{index}", question=question, gold=letter or str(value),
                   choices=choices, data_source=DATA_SOURCE, meta=meta)


def make_split(split: str, n: int, seed: int = 0, mc_rate: float = 0.2) -> list[Problem]:
    return [make_problem(i, split, seed, mc_rate) for i in range(n)]


def make_task(seed: int = 0, n_seed: int = 100, n_pool: int = 200, n_heldout: int = 150,
              mc_rate: float = 0.2) -> Task:
    """The whole task for ``seed``: seed, pool and held-out splits."""
    return Task(make_split("seed", n_seed, seed, mc_rate), make_split("pool", n_pool, seed, mc_rate),
                make_split("heldout", n_heldout, seed, mc_rate))


def teacher_solution(problem: Problem) -> str:
    """One ``Step k:`` line per operation (and one naming the option), then the answer sentence."""
    m = problem.meta
    lines, acc = [], m["amounts"][0]
    for op, x, r in zip(m["ops"], m["amounts"][1:], m["partials"]):
        lines.append(f"{acc} {op} {x} = {r}.")
        acc = r
    if m["letter"]:
        lines.append(f"{m['value']} is option {m['letter']}.")
    steps = [f"Step {k}: {line}" for k, line in enumerate(lines, 1)]
    return "\n".join(steps + [f"{ANSWER_PHRASE} {problem.gold}."])


def teacher_attempt(problem: Problem) -> Attempt:
    return Attempt(problem_id=problem.id, response=teacher_solution(problem), source="distilled", correct=True)


def vocabulary_text(seed: int = 0, n: int = 60) -> list[str]:
    """Questions, prompts and solutions of the task, for a tiny model's tokenizer (``build_tiny(extra_text=...)``)."""
    lines = []
    for p in make_split("pool", n, seed, mc_rate=0.5):
        lines += [build_solve_messages(p)[-1]["content"], teacher_solution(p)]
    return lines


def write_task(directory: str | Path, task: Task) -> dict[str, str]:
    """``train.jsonl``, ``heldout.jsonl`` and ``seed.jsonl`` in the loaders' format (``data.*`` of a recipe)."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)

    def rows(problems: Sequence[Problem]) -> str:
        return "".join(json.dumps({"id": p.id, "question": p.question, "answer": p.gold,
                                   **({"choices": list(p.choices)} if p.choices else {})}) + "\n" for p in problems)

    paths = {"train": out / "train.jsonl", "eval": out / "heldout.jsonl", "seed": out / "seed.jsonl"}
    paths["train"].write_text(rows(task.train))
    paths["eval"].write_text(rows(task.heldout))
    paths["seed"].write_text("".join(json.dumps({"problem_id": a.problem_id, "response": a.response}) + "\n"
                                     for a in task.seed_attempts()))
    return {k: str(v) for k, v in paths.items()}
