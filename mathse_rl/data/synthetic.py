"""A synthetic multimodal math world: bar charts whose heights exist only in the image.

Every problem shows a small PIL-rendered bar chart (one coloured bar per column, heights
1-9 units drawn on a faint unit grid) and asks to combine some bars. The question names
the bars by colour, never by value, so the numbers must be read from the image. Ground
truth is exact, the canonical solution is known step by step (see
:mod:`mathse_rl.data.teacher`), and difficulty is the number of reasoning steps:

=====  ========================================  =====  =========
level  question                                  steps  answers
=====  ========================================  =====  =========
1      red + blue  (two bars)                    3      2..18
2      red + blue + green  (three bars)          5      3..27
3      red + blue - green  (three bars, ≥ 0)     5      0..17
=====  ========================================  =====  =========

A share of problems is multiple choice (four evenly spaced options, gold is the letter) and
then has one more step, naming the option. Bars are large and few on purpose: small visual
signals are not learnt by a tiny VLM in minutes.

Measured learnability (tiny Qwen2.5-VL size S from random weights, one CPU thread, batch 32,
lr 1e-3 with cosine decay, greedy accuracy on held-out problems; 25% multiple choice):

- level 1, a fresh teacher-solved problem per example
  (``benchmarks/demo_learnability.py --size S --steps 300 --eval-every 100 --eval-n 200 --levels 1``):
  6.0% after 100 steps, 49.0% after 200, 74.5% after 300 (~5 min on a shared 2-core CPU) with
  65.5% of held-out chains right in every step; pass@8 at temperature 1.0: 94%, but only 16%
  of sampled paths with a right answer have every step right.
- level 1, only 128 teacher-solved problems, 150 steps (M0 of ``mathse-rl demo``): 31.0%,
  with almost no fully right chains: the model first learns to guess the sum, then the steps.
- levels 1 + 2 (``recipes/demo/two_levels.yaml``): M0 11.7%; 37.7% after 120 more steps on
  512 teacher paths. Levels 2 and 3 need longer than the demo's budget.

Splits are disjoint seed streams: ``make_split("train", n, seed=s)`` and
``make_split("heldout", n, seed=s)`` never share a random stream, and the same arguments
always give the same problems.

    >>> probs = make_split("train", 3, seed=0)
    >>> [p.meta["level"] for p in probs]  # doctest: +SKIP
    [2, 1, 3]
    >>> probs[0].images[0].size  # doctest: +SKIP
    (84, 56)
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from PIL import Image, ImageDraw

from mathse_rl.types import Problem

DATA_SOURCE = "mathse_synthetic_bars"

# Colour name -> RGB. Saturated, far apart, so one patch of the bar tells them apart.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "blue": (30, 60, 220),
    "green": (20, 160, 40),
}
LETTERS = "ABCD"


@dataclass(frozen=True)
class Level:
    """One difficulty level: which bars are shown and how they are combined."""

    bars: tuple[str, ...]  # colours shown, left to right
    ops: tuple[str, ...]  # operators applied left to right to the bars' heights
    question: str  # the question text; names bars by colour only


LEVELS: dict[int, Level] = {
    1: Level(("red", "blue"), ("+",),
             "Add the heights of the red and blue bars."),
    2: Level(("red", "blue", "green"), ("+", "+"),
             "Add the heights of the red, blue and green bars."),
    3: Level(("red", "blue", "green"), ("+", "-"),
             "Add the heights of the red and blue bars, then subtract the green bar."),
}


@dataclass(frozen=True)
class WorldConfig:
    """How problems are drawn and rendered."""

    levels: tuple[int, ...] = (1, 2, 3)  # difficulty levels to draw from, uniformly
    mc_rate: float = 0.25  # share of problems posed as multiple choice (A-D)
    max_height: int = 9  # bar heights are drawn from 1..max_height
    column_px: int = 28  # width of one bar's column (two 14 px patches)
    image_height: int = 56  # image height in pixels (a multiple of 28)
    unit_px: int = 5  # pixels per unit of bar height
    jitter_px: int = 2  # random horizontal shift of each bar, so equal charts differ slightly
    level_weights: tuple[float, ...] | None = None  # optional weights over ``levels``

    def __post_init__(self) -> None:
        unknown = [lv for lv in self.levels if lv not in LEVELS]
        if unknown:
            raise ValueError(f"unknown levels {unknown}; known: {sorted(LEVELS)}")
        if self.max_height * self.unit_px > self.image_height - 4:
            raise ValueError("bars of max_height do not fit in image_height at unit_px")
        if self.level_weights is not None and len(self.level_weights) != len(self.levels):
            raise ValueError("level_weights must have one weight per level")


# Each split draws from its own seed stream; offsets are far apart primes.
_SPLIT_OFFSETS = {"train": 0, "heldout": 1_000_003, "seed": 2_000_003, "orm": 3_000_017}


def evaluate(heights: Sequence[int], ops: Sequence[str]) -> list[int]:
    """Running values of combining ``heights`` with ``ops`` left to right.

    >>> evaluate([7, 5, 3], ["+", "-"])
    [12, 9]
    """
    total = heights[0]
    out = []
    for op, h in zip(ops, heights[1:]):
        total = apply_op(total, op, h)
        out.append(total)
    return out


def apply_op(a: int, op: str, b: int) -> int:
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    raise ValueError(f"unknown operator {op!r}")


def render_chart(heights: Sequence[int], colours: Sequence[str], cfg: WorldConfig,
                 rng: random.Random | None = None) -> Image.Image:
    """Draw one bar per column on a white canvas with a faint unit grid."""
    rng = rng or random.Random(0)
    width = cfg.column_px * len(heights)
    img = Image.new("RGB", (width, cfg.image_height), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    base = cfg.image_height - 2
    for unit in range(1, cfg.max_height + 1):  # grid lines help read heights
        y = base - unit * cfg.unit_px
        draw.line([(0, y), (width - 1, y)], fill=(225, 225, 225))
    draw.line([(0, base), (width - 1, base)], fill=(0, 0, 0))
    for i, (h, colour) in enumerate(zip(heights, colours)):
        shift = rng.randint(-cfg.jitter_px, cfg.jitter_px) if cfg.jitter_px else 0
        x0 = i * cfg.column_px + 5 + shift
        x1 = (i + 1) * cfg.column_px - 6 + shift
        draw.rectangle([x0, base - h * cfg.unit_px, x1, base - 1], fill=COLOURS[colour])
    return img


def _options(answer: int, rng: random.Random) -> tuple[list[str], str]:
    """Four evenly spaced non-negative options containing ``answer``; returns (options, gold letter).

    The answer's rank among the option values is uniform (except for answers below 3), so
    "pick the middle value" is no better than a blind guess; distractors drawn at random
    around the answer would put it in the middle most of the time.
    """
    stride = rng.choice([1, 2])
    rank = rng.randrange(min(4, answer // stride + 1))  # values stay >= 0 (small answers rank low)
    opts = [str(answer + (i - rank) * stride) for i in range(4)]
    rng.shuffle(opts)
    return opts, LETTERS[opts.index(str(answer))]


def make_problem(index: int, split: str = "train", seed: int = 0, cfg: WorldConfig | None = None,
                 level: int | None = None) -> Problem:
    """The ``index``-th problem of ``split`` for ``seed``: deterministic, image included.

    ``meta`` carries everything the teacher and the step checker need: ``level``,
    ``bars`` (colours left to right), ``heights``, ``ops``, ``partials`` (running results),
    ``value`` (the numeric answer) and ``letter`` (multiple choice only).
    """
    cfg = cfg or WorldConfig()
    if split not in _SPLIT_OFFSETS:
        raise ValueError(f"unknown split {split!r}; known: {sorted(_SPLIT_OFFSETS)}")
    rng = random.Random(f"{seed}:{_SPLIT_OFFSETS[split]}:{index}")
    if level is None:
        level = rng.choices(list(cfg.levels), weights=cfg.level_weights)[0]
    spec = LEVELS[level]
    while True:  # redraw until every running value is non-negative (level 3 subtracts)
        heights = [rng.randint(1, cfg.max_height) for _ in spec.bars]
        partials = evaluate(heights, spec.ops)
        if min(partials) >= 0:
            break
    value = partials[-1]
    multiple_choice = rng.random() < cfg.mc_rate
    choices, letter = (_options(value, rng) if multiple_choice else (None, None))
    image = render_chart(heights, spec.bars, cfg, rng)
    meta: dict[str, Any] = {
        "level": level, "bars": list(spec.bars), "heights": heights, "ops": list(spec.ops),
        "partials": partials, "value": value, "letter": letter, "split": split, "seed": seed,
    }
    return Problem(
        id=f"{split}-{seed}-{index}",
        question=spec.question,
        gold=letter if multiple_choice else str(value),
        images=(image,),
        choices=tuple(choices) if choices else None,
        data_source=DATA_SOURCE,
        meta=meta,
    )


def make_split(split: str, n: int, seed: int = 0, cfg: WorldConfig | None = None,
               start: int = 0, level: int | None = None) -> list[Problem]:
    """``n`` problems of ``split`` (indices ``start .. start+n-1``), deterministic in ``seed``."""
    return [make_problem(i, split, seed, cfg, level) for i in range(start, start + n)]


def vocabulary_text(n_examples: int = 40, seed: int = 0) -> list[str]:
    """Sample text of this world (questions, prompts, solutions, critiques).

    Passing it as ``extra_text`` to ``build_tokenizer`` gives merges for these words, so
    prompts and solutions become short token sequences.
    """
    from mathse_rl.data import teacher
    from mathse_rl.prompts import build_solve_messages

    lines = [spec.question for spec in LEVELS.values()]
    rng = random.Random(seed)
    for i in range(n_examples):
        p = make_problem(i, "train", seed)
        lines.append(build_solve_messages(p)[-1]["content"][-1]["text"])
        lines.append(teacher.teacher_solution(p))
        wrong = teacher.inject_error(p, rng.choice(teacher.ERROR_KINDS), rng)
        if wrong is not None:
            lines.append(wrong.response)
            lines.append(wrong.analysis)
    return lines


def write_problems(path: str | Path, problems: Sequence[Problem], image_dir: str | Path | None = None) -> str:
    """Problems as a ``.jsonl`` the loaders read (``mathse-rl evolve data.*``, the online recipe's
    ``--train_data``): each image saved as a PNG under ``image_dir`` (default: ``<path stem>_images``)
    and named by its absolute path.

        >>> write_problems("/tmp/pool.jsonl", make_split("train", 2))  # doctest: +SKIP
        '/tmp/pool.jsonl'
    """
    import json

    path = Path(path)
    images = Path(image_dir) if image_dir is not None else path.with_name(path.stem + "_images")
    images.mkdir(parents=True, exist_ok=True)
    lines = []
    for p in problems:
        names = []
        for k, img in enumerate(p.images):
            target = images / f"{p.id}-{k}.png"
            img.save(target)
            names.append(str(target.resolve()))
        lines.append(json.dumps({"id": p.id, "question": p.question, "answer": p.gold, "images": names,
                                 **({"choices": list(p.choices)} if p.choices else {})}))
    path.write_text("\n".join(lines) + "\n")
    return str(path)
