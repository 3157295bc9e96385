"""A second tiny visual task, which the demo never sees: counting coloured tiles.

It exists to try recipes tuned on the bar-chart world (:mod:`mathse_rl.data.synthetic`) on a
task nobody tuned them for. An image is a 2x2 grid of large tiles (28 px, one merged patch
each), every tile red, blue, green or yellow; the question asks how many tiles have one colour.
The colours exist only in the image, and the teacher reads the tiles one per step:

    Step 1: The top-left tile is red.
    Step 2: The top-right tile is blue.
    Step 3: The bottom-left tile is red.
    Step 4: The bottom-right tile is green.
    Step 5: 2 tiles are red.
    The answer to this problem is 2.

A share of the problems is multiple choice (four options, the gold answer is the letter, one
more step names it). Splits draw from disjoint random streams; everything is deterministic in
``seed``.

    >>> p = make_problem(0, "pool", seed=0)
    >>> p.images[0].size, p.gold in "01234ABCD"
    ((56, 56), True)
"""

from __future__ import annotations

import random
from typing import Any, Sequence

from PIL import Image, ImageDraw

from mathse_rl.prompts import ANSWER_PHRASE, build_solve_messages
from mathse_rl.types import Attempt, Problem

DATA_SOURCE = "mathse_colour_tiles"
COLOURS: dict[str, tuple[int, int, int]] = {"red": (220, 30, 30), "blue": (30, 60, 220),
                                            "green": (20, 160, 40), "yellow": (230, 200, 20)}
PLACES = ("top-left", "top-right", "bottom-left", "bottom-right")
TILE_PX = 28
LETTERS = "ABCD"
_SPLITS = {"seed": 5, "pool": 17, "heldout": 29}


def render(colours: Sequence[str]) -> Image.Image:
    """The 2x2 grid, row by row, with a thin white gap between tiles."""
    img = Image.new("RGB", (2 * TILE_PX, 2 * TILE_PX), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    for i, c in enumerate(colours):
        x, y = (i % 2) * TILE_PX, (i // 2) * TILE_PX
        draw.rectangle([x + 1, y + 1, x + TILE_PX - 2, y + TILE_PX - 2], fill=COLOURS[c])
    return img


def make_problem(index: int, split: str = "pool", seed: int = 0, mc_rate: float = 0.25) -> Problem:
    """The ``index``-th problem of ``split`` for ``seed`` (deterministic)."""
    if split not in _SPLITS:
        raise ValueError(f"unknown split {split!r}; known: {sorted(_SPLITS)}")
    rng = random.Random(f"tiles:{seed}:{_SPLITS[split]}:{index}")
    names = sorted(COLOURS)
    colours = [rng.choice(names) for _ in PLACES]
    target = rng.choice(names)
    value = colours.count(target)
    choices = letter = None
    if rng.random() < mc_rate:
        options = [str(v) for v in rng.sample(range(5), 4) if v != value][:3] + [str(value)]
        rng.shuffle(options)
        choices, letter = tuple(options), LETTERS[options.index(str(value))]
    meta: dict[str, Any] = {"colours": colours, "target": target, "value": value, "letter": letter}
    return Problem(id=f"tiles-{split}-{seed}-{index}", question=f"How many tiles are {target}?",
                   gold=letter or str(value), images=(render(colours),), choices=choices,
                   data_source=DATA_SOURCE, meta=meta)


def make_split(split: str, n: int, seed: int = 0, mc_rate: float = 0.25) -> list[Problem]:
    return [make_problem(i, split, seed, mc_rate) for i in range(n)]


def teacher_solution(problem: Problem) -> str:
    """One step per tile, one counting step (and one naming the option), then the answer sentence."""
    m = problem.meta
    lines = [f"The {place} tile is {c}." for place, c in zip(PLACES, m["colours"])]
    lines.append(f"{m['value']} tiles are {m['target']}." if m["value"] != 1 else f"1 tile is {m['target']}.")
    if m["letter"]:
        lines.append(f"{m['value']} is option {m['letter']}.")
    return "\n".join([f"Step {k}: {line}" for k, line in enumerate(lines, 1)] + [f"{ANSWER_PHRASE} {problem.gold}."])


def teacher_attempt(problem: Problem) -> Attempt:
    return Attempt(problem_id=problem.id, response=teacher_solution(problem), source="distilled", correct=True)


def vocabulary_text(seed: int = 0, n: int = 40) -> list[str]:
    """Questions, prompts and solutions of the task, for a tiny model's tokenizer (``build_tiny(extra_text=...)``)."""
    lines = []
    for p in make_split("pool", n, seed, mc_rate=0.5):
        lines += [build_solve_messages(p)[-1]["content"][-1]["text"], teacher_solution(p)]
    return lines
