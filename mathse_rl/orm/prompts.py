"""The judge (ORM) prompt and the JSON answer it is trained to give.

The prompt follows MathSE's judge: compare the numbered solution with the reference
answer step by step, accept equivalent forms and any valid answer, do not reveal the
answer, and reply with one JSON object with ``status``, ``error_step`` (here the index of
the first wrong step), ``error_analysis`` and ``improvement_suggestion``.

    >>> msgs = build_judge_messages("What is 2 + 3?", "Step 1: 2 + 3 = 6.", gold="5")
    >>> "Step 1: 2 + 3 = 6." in msgs[0]["content"], msgs[0]["role"]
    (True, 'user')
    >>> render_judgment(Judgment(status="WRONG", error_step=1, error_analysis="2 + 3 is not 6."))[:32]
    '{"status": "WRONG", "error_step"'
"""

from __future__ import annotations

import json
from typing import Any, Sequence

from mathse_rl.chat import format_options, user_message
from mathse_rl.orm.steps import number_steps, segment_steps
from mathse_rl.types import Judgment

# What the local backend force-decodes before reading P(CORRECT) from the next token.
STATUS_PREFIX = '{"status": "'

JUDGE_TEMPLATE = (
    "You are a strict mathematics teacher grading a student's solution.\n"
    "Problem: {question}{options}\n"
    "Student solution (numbered steps):\n{steps}\n"
    "Reference answer: {gold}\n"
    "Compare the solution with the problem{image_hint} and the reference answer step by step. "
    "Check every key reasoning step, not only the final answer. An answer in a different format "
    "with the same meaning is correct; when the problem has several valid answers, any of them is "
    "correct. Do not reveal the reference answer in your explanation.\n"
    "Reply with one JSON object and nothing else:\n"
    '{{"status": "CORRECT" or "WRONG", "error_step": the number of the first wrong step or null, '
    '"error_analysis": why that step is wrong, "improvement_suggestion": how to improve the solution}}'
)

# A short template for tiny judges trained from scratch: the reference answer sits right
# before the verdict, with no instructions to read past. Real judges keep the full one.
COMPACT_JUDGE_TEMPLATE = (
    "Grade the solution.\n"
    "Problem: {question}{options}\n"
    "Solution:\n{steps}\n"
    "Reference answer: {gold}"
)

# Prompt templates by name (``JudgeConfig.prompt_template`` and ``build_orm_dataset``'s ``template``).
JUDGE_TEMPLATES = {"full": JUDGE_TEMPLATE, "compact": COMPACT_JUDGE_TEMPLATE}

# Training targets: "full" (the paper's JSON), "binary" (the paper's ablation: status alone)
# and "step" (status and first wrong step, no prose: short enough for tiny judges).
LABEL_FORMATS = ("full", "binary", "step")


def build_judge_prompt(question: str, response: str, gold: str | None,
                       choices: Sequence[str] | None = None, n_images: int = 0,
                       steps: Sequence[str] | None = None, template: str = "full") -> str:
    """The judge's instruction text with the solution shown as numbered steps.

    ``template`` names an entry of :data:`JUDGE_TEMPLATES` ("full" is MathSE's prompt).
    """
    if template not in JUDGE_TEMPLATES:
        raise ValueError(f"unknown judge prompt template {template!r}; choose one of {sorted(JUDGE_TEMPLATES)}")
    steps = list(steps) if steps is not None else segment_steps(response)
    return JUDGE_TEMPLATES[template].format(
        question=question.strip(),
        options=format_options(choices),
        steps=number_steps(steps) if steps else "(empty solution)",
        gold=gold if gold not in (None, "") else "(not given)",
        image_hint=" and the image" if n_images else "",
    )


def build_judge_messages(question: str, response: str, gold: str | None,
                         choices: Sequence[str] | None = None, n_images: int = 0,
                         steps: Sequence[str] | None = None, template: str = "full") -> list[dict[str, Any]]:
    """The judge prompt as chat messages (trl/verl conversational format)."""
    return [user_message(build_judge_prompt(question, response, gold, choices, n_images, steps, template), n_images)]


def render_judgment(judgment: Judgment, label_format: str = "full") -> str:
    """The JSON a judge should answer with; the SFT target for ORM training.

    ``status`` comes first so a decoder can be primed with :data:`STATUS_PREFIX`.
    """
    if label_format not in LABEL_FORMATS:
        raise ValueError(f"unknown label_format {label_format!r}; choose one of {LABEL_FORMATS}")
    obj: dict[str, Any] = {"status": judgment.status}
    if label_format in ("full", "step"):
        obj["error_step"] = None if judgment.correct else judgment.error_step
    if label_format == "full":
        obj["error_analysis"] = judgment.error_analysis
        obj["improvement_suggestion"] = judgment.improvement_suggestion
    return json.dumps(obj, ensure_ascii=False)
