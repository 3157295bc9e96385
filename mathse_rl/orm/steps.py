"""Deterministic step segmentation, so a judge's ``error_step`` is an index.

A solution is cut into steps by the first rule that applies:

1. explicit ``Step k`` headers (``Step 1:``, ``**Step 2.**``, ``step 3)``) — text before the
   first header joins step 1, text after the last header stays in the last step;
2. paragraphs (blank-line separated), when there are at least two;
3. lines, when there are at least two;
4. sentences.

    >>> segment_steps("Step 1: 5 + 7 = 12.\\nStep 2: 12 - 3 = 9.\\nThe answer to this problem is 9.")
    ['5 + 7 = 12.', '12 - 3 = 9.\\nThe answer to this problem is 9.']
    >>> segment_steps("The red bar is 5. The blue bar is 7. So the sum is 12.")
    ['The red bar is 5.', 'The blue bar is 7.', 'So the sum is 12.']
    >>> print(number_steps(["a = 1.", "b = 2."]))
    Step 1: a = 1.
    Step 2: b = 2.
"""

from __future__ import annotations

import re
from typing import Sequence

# "Step 3:", "**Step 3.**", "### Step 3 -", "step 3)" at the start of a line.
_STEP_HEADER = re.compile(r"^[ \t>#*_-]*step\s*(\d+)\s*[:.)\-–—]?[*_]*[ \t]*", re.IGNORECASE | re.MULTILINE)
_PARAGRAPH = re.compile(r"\n[ \t]*\n+")
# A sentence ends at . ! ? followed by space and an upper-case letter, digit or opening bracket;
# "3.5" and "e.g. x" are not split.
_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9(\[])")


def _clean(parts: Sequence[str]) -> list[str]:
    return [p.strip() for p in parts if p and p.strip()]


def segment_steps(response: str) -> list[str]:
    """Cut ``response`` into its reasoning steps (without the ``Step k:`` labels)."""
    text = (response or "").replace("\r\n", "\n").strip()
    if not text:
        return []
    headers = list(_STEP_HEADER.finditer(text))
    if headers:
        steps: list[str] = []
        for i, m in enumerate(headers):
            end = headers[i + 1].start() if i + 1 < len(headers) else len(text)
            steps.append(text[m.end():end])
        preamble = text[: headers[0].start()].strip()
        if preamble:
            steps[0] = preamble + "\n" + steps[0].strip()
        out = _clean(steps)
        if out:
            return out
    paragraphs = _clean(_PARAGRAPH.split(text))
    if len(paragraphs) >= 2:
        return paragraphs
    lines = _clean(text.split("\n"))
    if len(lines) >= 2:
        return lines
    return _clean(_SENTENCE.split(text))


def number_steps(steps: Sequence[str]) -> str:
    """Render steps as ``Step k: ...`` lines, the form the judge sees and indexes."""
    return "\n".join(f"Step {i}: {s}" for i, s in enumerate(steps, 1))
