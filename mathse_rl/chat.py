"""Chat-message building blocks shared by every prompt (solve, reflect, judge).

Messages use the conversational format trl and verl share: ``{"role", "content"}`` where
content is a string, or image parts followed by a text part when there are images.

    >>> user_message("What is 2 + 3?", n_images=1)["content"][0]
    {'type': 'image'}
    >>> format_options(["3", "4"])
    '\\nOptions: A. 3  B. 4'
"""

from __future__ import annotations

from typing import Any, Sequence

OPTION_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def format_options(choices: Sequence[str] | None) -> str:
    """The options of a multiple-choice question as one line; empty when there are none."""
    if not choices:
        return ""
    return "\nOptions: " + "  ".join(f"{OPTION_LETTERS[i]}. {c}" for i, c in enumerate(choices))


def user_message(text: str, n_images: int) -> dict[str, Any]:
    """A user turn: plain text, or ``n_images`` image parts followed by the text."""
    if n_images == 0:
        return {"role": "user", "content": text}
    parts: list[dict[str, Any]] = [{"type": "image"} for _ in range(n_images)]
    parts.append({"type": "text", "text": text})
    return {"role": "user", "content": parts}
