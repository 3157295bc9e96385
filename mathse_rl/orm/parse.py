"""Read a judge's reply into a :class:`~mathse_rl.types.Judgment`, tolerantly and honestly.

Judges wrap their JSON in code fences, add prose around it, use single quotes or Python
literals, write ``"error_step": "Step 3"`` or stop mid-sentence at the token limit. The
parser repairs what it can without guessing: the ``status`` must be read from a status
field, never inferred. When it cannot be read, the judgment carries ``parse_error`` (and
status WRONG with score 0.0, so an unread reply is never taken as a pass); smaller gaps
(a missing field, a step that is not a number or out of range) are listed as notes.

    >>> j = parse_judgment('```json\\n{"status": "WRONG", "error_step": "Step 2", "error_analysis": "misread"}\\n```')
    >>> j.status, j.error_step, j.parse_error
    ('WRONG', 2, None)
    >>> parse_judgment("I think it is fine.").parse_error
    'no status field found'
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Sequence

from mathse_rl.types import Judgment

_FENCE = re.compile(r"```[a-zA-Z]*")
_INT = re.compile(r"-?\d+")
_STEP_NUM = re.compile(r"steps?\s*#?\s*(\d+)", re.IGNORECASE)
_STATUS_WORDS = {"CORRECT": "CORRECT", "WRONG": "WRONG", "INCORRECT": "WRONG"}
_NULLS = {"", "null", "none", "n/a", "na", "nan", "-"}

# Field names after lower-casing and dropping non-letters.
_KEYS = {
    "status": "status",
    "verdict": "status",
    "errorstep": "error_step",
    "firsterrorstep": "error_step",
    "erroranalysis": "error_analysis",
    "analysis": "error_analysis",
    "improvementsuggestion": "improvement_suggestion",
    "improvementsuggestions": "improvement_suggestion",
    "suggestion": "improvement_suggestion",
}


@dataclass(frozen=True)
class ParseResult:
    """A parsed judgment plus the non-fatal gaps met on the way."""

    judgment: Judgment
    notes: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.judgment.parse_error is None


def _objects(text: str) -> list[str]:
    """Every balanced ``{...}`` span (quote-aware), outermost first; an unclosed one at the end too."""
    spans: list[str] = []
    i = 0
    while True:
        start = text.find("{", i)
        if start < 0:
            return spans
        depth, quote, esc = 0, None, False
        for j in range(start, len(text)):
            c = text[j]
            if quote:
                if esc:
                    esc = False
                elif c == "\\":
                    esc = True
                elif c == quote:
                    quote = None
                continue
            if c == '"':
                quote = c
            elif c == "{":
                depth += 1
            elif c == "}":
                depth -= 1
                if depth == 0:
                    spans.append(text[start:j + 1])
                    i = j + 1
                    break
        else:
            spans.append(text[start:])  # truncated: left for the pattern reader
            return spans


def _repair(s: str) -> str:
    """Rewrite near-JSON (single quotes, Python literals, bare keys, trailing commas) as JSON."""
    out: list[str] = []
    i, n = 0, len(s)
    while i < n:
        c = s[i]
        if c == '"':  # copy a double-quoted string as is
            j = i + 1
            while j < n and s[j] != '"':
                j += 2 if s[j] == "\\" else 1
            out.append(s[i:j + 1])
            i = j + 1
        elif c == "'":  # a single-quoted string ends at a quote followed by , : } ]
            j = i + 1
            while j < n:
                if s[j] == "'" and re.match(r"\s*(?:[,:}\]]|$)", s[j + 1:]):
                    break
                j += 1
            out.append(json.dumps(s[i + 1:j]))
            i = j + 1
        else:
            m = re.match(r"[A-Za-z_][A-Za-z0-9_ ]*", s[i:])
            if m:
                word = m.group(0).rstrip()
                rest = s[i + len(m.group(0)):].lstrip()
                if rest.startswith(":"):
                    out.append(json.dumps(word))  # bare key
                else:
                    literal = {"None": "null", "True": "true", "False": "false"}.get(word, word)
                    out.append(literal if literal in ("null", "true", "false") else json.dumps(word))
                    out.append(m.group(0)[len(word):])
                i += len(m.group(0))
            else:
                out.append(c)
                i += 1
    return re.sub(r",\s*([}\]])", r"\1", "".join(out))


def _load(span: str) -> dict[str, Any] | None:
    for candidate in (span, _repair(span)):
        try:
            obj = json.loads(candidate)
        except (ValueError, RecursionError):
            continue
        if isinstance(obj, dict):
            return obj
    return None


def _canonical(obj: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in obj.items():
        name = _KEYS.get(re.sub(r"[^a-z]", "", str(key).lower()))
        if name and name not in out:
            out[name] = value
    return out


def _by_pattern(text: str) -> dict[str, Any]:
    """Fields read as ``key: value`` pairs from text that is not (complete) JSON."""
    out: dict[str, Any] = {}
    m = re.search(r"""["']?status["']?\s*[:=]\s*["']?\s*([A-Za-z]+)""", text, re.IGNORECASE)
    if m:
        out["status"] = m.group(1)
    m = re.search(r"""["']?error[_ ]step["']?\s*[:=]\s*("[^"]*"|'[^']*'|[^,}\n]+)""", text, re.IGNORECASE)
    if m:
        out["error_step"] = m.group(1).strip().strip("\"'")
    for key in ("error_analysis", "improvement_suggestion"):
        pat = key.replace("_", "[_ ]")
        m = re.search(r"""["']?""" + pat + r"""["']?\s*[:=]\s*["']([^"']*)""", text, re.IGNORECASE)
        if m:
            out[key] = m.group(1).strip()
    return out


def _status(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    return _STATUS_WORDS.get(value.strip().strip(".").upper())


def _error_step(value: Any, n_steps: int | None, notes: list[str]) -> tuple[int | None, str]:
    """(index, text) from an int, "3", "Step 3", "Steps 2 and 4: ...", or null."""
    if value is None or isinstance(value, bool):
        return None, ""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = str(value).strip()
    if isinstance(value, int):
        index: int | None = value
    elif text.lower() in _NULLS:
        return None, ""
    else:
        m = _STEP_NUM.search(text) or (_INT.fullmatch(text.strip(". ")) and _INT.search(text))
        index = int(m.group(1) if m.re is _STEP_NUM else m.group(0)) if m else None
        if index is None:
            notes.append(f"error_step {text[:40]!r} names no step number")
    if index is not None and (index < 1 or (n_steps is not None and index > n_steps)):
        notes.append(f"error_step {index} is outside 1..{n_steps if n_steps is not None else 'n'}")
        index = None
    return index, ("" if isinstance(value, int) or _INT.fullmatch(text.strip(". ")) else text)


def parse_judgment_report(raw: str | None, steps: Sequence[str] | None = None) -> ParseResult:
    """Parse ``raw`` and say what was missing; ``steps`` (the segmented solution) bounds error_step."""
    raw = raw or ""
    text = _FENCE.sub("", raw)
    notes: list[str] = []
    fields: dict[str, Any] = {}
    for span in _objects(text):
        obj = _load(span)
        if obj is not None and "status" in _canonical(obj):
            fields = _canonical(obj)
            break
    if not fields:
        fields = _by_pattern(text)
        if fields:
            notes.append("no complete JSON object; fields read as key: value text")
    if "status" not in fields:
        return ParseResult(Judgment(status="WRONG", score=0.0, raw=raw, parse_error="no status field found"),
                           tuple(notes))
    status = _status(fields["status"])
    if status is None:
        msg = f"status {str(fields['status'])[:40]!r} is neither CORRECT nor WRONG"
        return ParseResult(Judgment(status="WRONG", score=0.0, raw=raw, parse_error=msg), tuple(notes))

    n_steps = len(steps) if steps is not None else None
    error_step, error_step_text = None, ""
    if status == "WRONG":
        if "error_step" not in fields:
            notes.append("error_step missing")
        error_step, error_step_text = _error_step(fields.get("error_step"), n_steps, notes)
        if error_step is not None and not error_step_text and steps is not None:
            error_step_text = f"Step {error_step}: {steps[error_step - 1]}"
    for key in ("error_analysis", "improvement_suggestion"):
        if key not in fields and (status == "WRONG" or key == "improvement_suggestion"):
            notes.append(f"{key} missing")

    def text_of(key: str) -> str:
        value = fields.get(key)
        return "" if value is None else str(value).strip()

    judgment = Judgment(
        status=status,
        error_step=error_step,
        error_step_text=error_step_text,
        error_analysis=text_of("error_analysis"),
        improvement_suggestion=text_of("improvement_suggestion"),
        score=1.0 if status == "CORRECT" else 0.0,
        raw=raw,
        parse_error=None,
    )
    return ParseResult(judgment, tuple(notes))


def parse_judgment(raw: str | None, steps: Sequence[str] | None = None) -> Judgment:
    """Parse a judge reply; see :func:`parse_judgment_report` for the notes on gaps."""
    return parse_judgment_report(raw, steps).judgment
