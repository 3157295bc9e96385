"""Labelled toy rollouts with exact first-error steps, for smoke runs, tests and benchmarks.

Each problem shows two coloured bars (drawn in the image, and stated in the question so
a text judge can follow) and asks for their sum. A correct path reads both bars, adds
and states the answer; a wrong path either misreads a bar (first error: step 1 or 2) or
slips in the addition (first error: step 3).

    >>> rows = toy_rollouts(4, seed=0)
    >>> [(r["correct"], r["error_step"]) for r in rows]
    [(True, None), (False, 3), (True, None), (False, 3)]
"""

from __future__ import annotations

import random
from typing import Any

ANSWER = "The answer to this problem is"


def _image(a: int, b: int, size: int = 56):
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (size, size), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    unit = (size - 8) / 20
    draw.rectangle([8, size - 4 - a * unit, 24, size - 4], fill=(220, 30, 30))
    draw.rectangle([32, size - 4 - b * unit, 48, size - 4], fill=(30, 30, 220))
    return img


def toy_rollouts(n: int, seed: int = 0, images: bool = True) -> list[dict[str, Any]]:
    """``n`` rollouts alternating correct and wrong, with ``error_step`` labels for the wrong ones."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        a, b = rng.randint(1, 9), rng.randint(1, 9)
        question = f"The red bar is {a} and the blue bar is {b}. What is the sum of the two bars?"
        ra, rb, total = a, b, a + b
        error_step = None
        if i % 2 == 1:
            error_step = rng.choice([1, 2, 3])
            if error_step == 1:
                ra = a + rng.choice([-1, 1, 2])
            elif error_step == 2:
                rb = b + rng.choice([-1, 1, 2])
            total = ra + rb + (rng.choice([-1, 1]) if error_step == 3 else 0)
        response = (f"Step 1: The red bar is {ra}.\nStep 2: The blue bar is {rb}.\n"
                    f"Step 3: {ra} + {rb} = {total}.\n{ANSWER} {total}.")
        rows.append({
            "id": f"toy-{seed}-{i}",
            "question": question,
            "response": response,
            "gold": str(a + b),
            "images": [_image(a, b)] if images else [],
            "correct": error_step is None,
            "error_step": error_step,
            "reference_steps": [f"The red bar is {a}.", f"The blue bar is {b}.", f"{a} + {b} = {a + b}."],
        })
    return rows
