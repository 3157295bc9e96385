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
_STATUS_WORDS = {"CORRECT": "CORRECT", "WRONG": "WRONG", "INCORRECT": "WRONG"}
_ORDINALS = {"first": 1, "second": 2, "third": 3, "fourth": 4, "fifth": 5, "sixth": 6, "seventh": 7, "eighth": 8,
             "ninth": 9, "tenth": 10}
_HAN_DIGITS = {"一": 1, "二": 2, "两": 2, "三": 3, "四": 4, "五": 5, "六": 6, "七": 7, "八": 8, "九": 9}
# The ways judges name a step, tried in order: "Step 3", "steps #2 and 4", "第3步"/"第三步", "步骤3",
# "the 2nd step", "third step", "S2", and a bare "3" / "#3" / "(3)". Every quantifier is bounded.
_STEP_FORMS = (
    re.compile(r"\bsteps?\s{0,3}#?\s{0,3}(\d{1,6})", re.IGNORECASE),
    re.compile(r"第\s{0,3}(\d{1,6}|[一二两三四五六七八九十]{1,3})\s{0,3}步"),
    re.compile(r"步骤\s{0,3}(\d{1,6}|[一二两三四五六七八九十]{1,3})"),
    re.compile(r"\b(\d{1,6})(?:st|nd|rd|th)\s{1,3}step", re.IGNORECASE),
    re.compile(r"\b(" + "|".join(_ORDINALS) + r")\s{1,3}step", re.IGNORECASE),
    re.compile(r"^\s{0,3}S(\d{1,6})\b"),
    re.compile(r"^[\s#(\[]{0,4}(\d{1,6})[\s.)\]:]{0,4}$"),
)
# An explicit status in running text ("status: WRONG", "'Status' = correct"); its position decides
# which verdict is the final one.
_STATUS_TEXT = re.compile(r"""["']?\bstatus["']?[ \t]{0,20}[:=][ \t]{0,20}["']?[ \t]{0,20}([A-Za-z]{1,20})""",
                          re.IGNORECASE)
_MAX_REPAIR = 100_000  # characters of a near-JSON object worth repairing; a longer one is read as text
_MAX_FIELD_TEXT = 4000  # characters of a free-text field read from key: value text
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


def _objects(text: str) -> list[tuple[int, str]]:
    """Every top-level balanced ``{...}`` span (quote-aware) with its offset; an unclosed one at the end too.

    One pass over the text: linear whatever it holds (a reply of a million ``{`` included).
    """
    spans: list[tuple[int, str]] = []
    depth, start, in_quote, esc = 0, 0, False, False
    for j, c in enumerate(text):
        if in_quote:
            if esc:
                esc = False
            elif c == "\\":
                esc = True
            elif c == '"':
                in_quote = False
        elif c == "{":
            if depth == 0:
                start = j
            depth += 1
        elif depth:
            if c == '"':
                in_quote = True
            elif c == "}":
                depth -= 1
                if depth == 0:
                    spans.append((start, text[start:j + 1]))
    if depth:
        spans.append((start, text[start:]))  # truncated: left for the pattern reader
    return spans


_PLAIN = re.compile(r"""[^"'A-Za-z_]+""")
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_ ]*")
_QUOTE_END = re.compile(r"\s*(?:[,:}\]]|$)")
_SPACE = re.compile(r"\s*")


def _repair(s: str) -> str:
    """Rewrite near-JSON (single quotes, Python literals, bare keys, trailing commas) as JSON.

    Every step matches at a position (never on a slice), so the pass stays linear.
    """
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
            j = s.find("'", i + 1)
            while j >= 0 and not _QUOTE_END.match(s, j + 1):
                j = s.find("'", j + 1)
            j = n if j < 0 else j
            out.append(json.dumps(s[i + 1:j]))
            i = j + 1
        elif (m := _WORD.match(s, i)) is not None:
            word = m.group(0).rstrip()
            after = _SPACE.match(s, m.end()).end()
            if s.startswith(":", after):
                out.append(json.dumps(word))  # bare key
            else:
                literal = {"None": "null", "True": "true", "False": "false"}.get(word, word)
                out.append(literal if literal in ("null", "true", "false") else json.dumps(word))
                out.append(m.group(0)[len(word):])
            i = m.end()
        else:
            m = _PLAIN.match(s, i)  # punctuation, digits, braces: copied in one run
            out.append(m.group(0))
            i = m.end()
    return re.sub(r",\s*([}\]])", r"\1", "".join(out))


def _load(span: str) -> dict[str, Any] | None:
    for candidate in (span, _repair(span) if len(span) <= _MAX_REPAIR else None):
        if candidate is None:
            continue
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


def _by_pattern(text: str, at: int) -> dict[str, Any]:
    """Fields read as ``key: value`` pairs from text that is not (complete) JSON.

    The status is the one written at ``at``; each other field is the first one written after it
    (a judge states the verdict, then explains), else the last one before it.
    """
    out: dict[str, Any] = {}
    m = _STATUS_TEXT.match(text, at)
    if m:
        out["status"] = m.group(1)
    patterns = {
        "error_step": r"""["']?error[_ ]step["']?[ \t]{0,20}[:=][ \t]{0,20}("[^"\n]{0,200}"|'[^'\n]{0,200}'|[^,}\n]{1,200})""",
        "error_analysis": r"""["']?error[_ ]analysis["']?[ \t]{0,20}[:=][ \t]{0,20}["']?([^"'\n]{0,%d})""",
        "improvement_suggestion": r"""["']?improvement[_ ]suggestion["']?[ \t]{0,20}[:=][ \t]{0,20}["']?([^"'\n]{0,%d})""",
    }
    for key, pat in patterns.items():
        rx = re.compile(pat.replace("%d", str(_MAX_FIELD_TEXT)), re.IGNORECASE)
        found = rx.search(text, at)
        if found is None:
            before = None
            for before in rx.finditer(text, 0, at):
                pass
            found = before
        if found is not None:
            out[key] = found.group(1).strip().strip("\"'").strip()
    return out


def _final_verdict(text: str) -> tuple[dict[str, Any], bool]:
    """The fields of the last verdict in ``text`` and whether they came from a JSON object.

    Candidates are the JSON objects carrying a status and the explicit ``status: X`` written
    outside them; the one that starts last wins, so an example or a quoted object before the
    real verdict, or a first impression the judge then revises, does not decide.
    """
    best: tuple[int, dict[str, Any]] | None = None
    loaded: list[tuple[int, int]] = []  # spans of objects that were read: a status quoted inside them is theirs
    for start, span in _objects(text):
        low = span.lower()
        if "status" not in low and "verdict" not in low:
            continue  # cannot be a verdict: not worth a repair pass
        obj = _load(span)
        if obj is None:
            continue
        loaded.append((start, start + len(span)))
        if "status" in (fields := _canonical(obj)):
            best = (start, fields)
    last_text, k = -1, 0
    for m in _STATUS_TEXT.finditer(text):
        while k < len(loaded) and loaded[k][1] <= m.start():
            k += 1
        if not (k < len(loaded) and loaded[k][0] <= m.start()):
            last_text = m.start()
    if best is not None and best[0] >= last_text:
        return best[1], True
    if last_text >= 0:
        return _by_pattern(text, last_text), False
    return {}, False


def _status(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    return _STATUS_WORDS.get(value.strip().strip(".").upper())


def _step_number(text: str) -> int | None:
    """The step a judge names: "Step 3", "第3步", "第三步", "步骤3", "the 2nd step", "third step", "#3"...

    >>> _step_number("第三步：计算错误"), _step_number("Steps 2 and 4"), _step_number("the last one")
    (3, 2, None)
    """
    if _INT.fullmatch(text.strip(". ")):
        return int(text.strip(". "))
    for rx in _STEP_FORMS:
        m = rx.search(text)
        if m:
            token = m.group(1)
            if token.isdigit():
                return int(token)
            if token.lower() in _ORDINALS:
                return _ORDINALS[token.lower()]
            return _han_number(token)
    return None


def _han_number(token: str) -> int | None:
    """一..九十九 written with Chinese numerals (十 = 10, 十三 = 13, 二十 = 20)."""
    if "十" not in token:
        return _HAN_DIGITS.get(token) if len(token) == 1 else None
    tens, _, ones = token.partition("十")
    t = _HAN_DIGITS.get(tens, None) if tens else 1
    o = _HAN_DIGITS.get(ones, None) if ones else 0
    return None if t is None or o is None else 10 * t + o


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
        index = _step_number(text)
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
    fields, from_json = _final_verdict(text)
    if fields and not from_json:
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
