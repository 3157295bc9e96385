"""The solve and reflect prompts of MathSE, as chat messages.

Messages use the conversational format trl and verl share: a list of
``{"role", "content"}`` where content is a string, or a list of parts
(``{"type": "image"}`` then ``{"type": "text", "text": ...}``) when the problem has images.

    >>> from mathse_rl.types import Problem
    >>> msgs = build_solve_messages(Problem(id="q", question="What is 2 + 3?", gold="5"))
    >>> msgs[-1]["role"], ANSWER_PHRASE in msgs[-1]["content"]
    ('user', True)
"""

from __future__ import annotations

from typing import Any, Sequence

from mathse_rl.chat import format_options, user_message
from mathse_rl.types import Judgment, Problem

# The sentence every solution ends with; the verifier reads the answer after it.
ANSWER_PHRASE = "The answer to this problem is"

SOLVE_TEMPLATE = (
    "You are a mathematics teacher. Solve the problem below using the image. "
    "Write a detailed solution step by step, one step per line as 'Step k: ...', "
    "and finish with the sentence '" + ANSWER_PHRASE + " X.' where X is the result.\n"
    "{question}{options}"
)

# The same request for a problem that has no image.
SOLVE_TEXT_TEMPLATE = (
    "You are a mathematics teacher. Solve the problem below. "
    "Write a detailed solution step by step, one step per line as 'Step k: ...', "
    "and finish with the sentence '" + ANSWER_PHRASE + " X.' where X is the result.\n"
    "{question}{options}"
)

# Solve prompts by name; "auto" picks by the problem's modality (image or text).
SOLVE_TEMPLATES: dict[str, str] = {"image": SOLVE_TEMPLATE, "text": SOLVE_TEXT_TEMPLATE}

# The paper's reflection prompt, in our words: the original answer is certainly wrong,
# but the critique of it may itself be unreliable; only the new solution is asked for.
REFLECT_TEMPLATE = (
    "You are a mathematics teacher. Below are a problem (with its image), a previous solution "
    "to it, and a critique of that solution. The previous solution is certainly wrong. The "
    "critique points at the step where it went wrong and explains why, but the critique itself "
    "may be mistaken, so check it against the image and the question.\n"
    "Problem: {question}{options}\n"
    "Previous solution:\n{wrong_solution}\n"
    "Error step: {error_step}\n"
    "Error analysis: {error_analysis}\n"
    "Re-examine the problem and write a new, correct solution step by step, explaining your "
    "reasoning in detail. Give only the new solution, and finish with the sentence '"
    + ANSWER_PHRASE + " X.'"
)

# The paper's shorter variant.
REFLECT_SHORT_TEMPLATE = (
    "Problem: {question}{options}\n"
    "Your previous solution:\n{wrong_solution}\n"
    "Error step: {error_step}\n"
    "Error analysis: {error_analysis}\n"
    "Please reflect on the error and give a corrected solution, ending with '" + ANSWER_PHRASE + " X.'"
)

REFLECT_TEMPLATES: dict[str, str] = {"paper": REFLECT_TEMPLATE, "short": REFLECT_SHORT_TEMPLATE}


def solve_template(problem: Problem, template: str = "auto") -> str:
    """The solve prompt's format string for ``problem``: ``auto`` (the image prompt when it has
    images, else the text prompt), a name in :data:`SOLVE_TEMPLATES`, or a format string with
    ``{question}`` and ``{options}``.

        >>> "image" in solve_template(Problem(id="q", question="2 + 3?", gold="5"))
        False
    """
    if template == "auto":
        return SOLVE_TEMPLATES["image" if problem.images else "text"]
    if template in SOLVE_TEMPLATES:
        return SOLVE_TEMPLATES[template]
    if "{question}" not in template:
        raise ValueError(f"solve template must be auto, one of {sorted(SOLVE_TEMPLATES)} or a format string with "
                         f"{{question}}, got {template!r}")
    return template


def build_solve_messages(problem: Problem, template: str = "auto") -> list[dict[str, Any]]:
    """The prompt that asks the policy (or the teacher) to solve ``problem`` (see :func:`solve_template`)."""
    text = solve_template(problem, template).format(question=problem.question, options=format_options(problem.choices))
    return [user_message(text, len(problem.images))]


def describe_error_step(judgment: Judgment | None) -> str:
    if judgment is None:
        return "unknown"
    if judgment.error_step_text:
        return judgment.error_step_text
    return f"Step {judgment.error_step}" if judgment.error_step is not None else "unknown"


def build_reflect_messages(problem: Problem, wrong_solution: str, judgment: Judgment | None,
                           template: str = "paper") -> list[dict[str, Any]]:
    """The reflection prompt: the wrong solution plus the judge's critique.

    ``template`` is a name in :data:`REFLECT_TEMPLATES` or a format string with the fields
    ``question, options, wrong_solution, error_step, error_analysis``.
    """
    fmt = REFLECT_TEMPLATES.get(template, template)
    text = fmt.format(
        question=problem.question,
        options=format_options(problem.choices),
        wrong_solution=wrong_solution.strip(),
        error_step=describe_error_step(judgment),
        error_analysis=(judgment.error_analysis if judgment and judgment.error_analysis else "not given"),
    )
    return [user_message(text, len(problem.images))]
