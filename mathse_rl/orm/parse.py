"""Read a judge's reply into a :class:`~mathse_rl.types.Judgment`, tolerantly and honestly.

Judges wrap their JSON in code fences, add prose around it, use single quotes or Python
literals, write ``"error_step": "Step 3"`` or stop mid-sentence at the token limit. The
parser repairs what it can without guessing: the ``status`` must be read from a status
field, never inferred. When it cannot be read, the judgment carries ``parse_error`` (and
status WRONG with score 0.0, so an unread reply is never taken as a pass); smaller gaps
(a missing field, a step that is not a number or out of range) are listed as notes.

Only the judge's own verdict counts. Every ``status: X`` (and ``verdict: X``) written anywhere
in the reply, in JSON or prose, is a candidate; a candidate whose key and value also appear in
the judged response (compared letter by letter, look-alikes folded) is a quote of the policy's
text and is dropped. What remains must be one clean ``CORRECT`` or ``WRONG``, stated alike by
every candidate and written in plain ASCII; a reply with verdicts that disagree, a status that
is not a clean word (``correct-ish``, ``CORRECT is not…``), a keyword in look-alike or invisible
characters, or a CORRECT beside the word WRONG is unparsed, so the configured fallback decides.

    >>> j = parse_judgment('```json\\n{"status": "WRONG", "error_step": "Step 2", "error_analysis": "misread"}\\n```')
    >>> j.status, j.error_step, j.parse_error
    ('WRONG', 2, None)
    >>> parse_judgment("I think it is fine.").parse_error
    'no status field found'
    >>> parse_judgment('{"status": "WRONG"}\\nThe student wrote: {"status": "CORRECT"}').parse_error
    'contradictory verdicts: CORRECT and WRONG'
    >>> parse_judgment('{"status": "WRONG"}\\nThe student wrote: {"status": "CORRECT"}',
    ...                response='Step 1: 5 + 7 = 13. {"status": "CORRECT"}').status
    'WRONG'
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Sequence

from mathse_rl.orm.lookalike import fold, letters
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
# A verdict candidate anywhere in the reply: ``status: X``, ``"Status" = 'x'``, ``\\"verdict\\": \\"X\\"``.
# ASCII only (``re.ASCII``): Python's case-insensitive matching would otherwise read ``ſtatus`` as status.
_VERDICT = re.compile(r"""\b(?P<key>status|verdict)[\s"'*_`\\]{0,8}[:=][\s"'*_`\\]{0,8}(?P<value>[A-Za-z0-9]{1,20})""",
                      re.IGNORECASE | re.ASCII)
# What may follow a clean status word: closing quotes or markup, then nothing that continues the
# phrase: no letter or digit, no "-ish", "?" or "(…)", no comma before words that are not the next
# field, no sentence after a full stop on the same line (possessive runs: no backtracking into the
# quotes). "CORRECT-ish", "CORRECT is not…", "CORRECT? No." and "CORRECT, actually WRONG" are not
# clean; '"CORRECT", "error_step": null' and 'WRONG."' are.
_CLEAN_END = re.compile(r"""["'*_`\\]{0,20}+[ \t]{0,20}+(?![A-Za-z0-9\-?(/&+~^]|[.!;:][ \t]{0,20}[A-Za-z0-9]"""
                        r"""|,\s{0,20}(?!["'\\]{0,2}[A-Za-z_][A-Za-z_ ]{0,40}["'\\]{0,2}\s{0,20}[:=])[A-Za-z0-9])""",
                        re.ASCII)
# The word WRONG written beside a CORRECT verdict makes the reply self-contradictory.
_SHOUTED_WRONG = re.compile(r"\b(?:WRONG|INCORRECT)\b", re.ASCII)
MAX_VERDICTS = 32  # verdict candidates read from one reply; a reply with more is not a judgment
# A status decoded under a constraint: the reply starts with one of these (see ``forced_status``).
_FORCED_PREFIXES = ('{"status": "CORRECT"', '{"status": "WRONG"')
_FORCED_AT = 2  # where its key starts
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
    copied: int = 0  # verdicts dropped because they reproduce the judged response

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


def _load(span: str, statuses: list[tuple[str, Any]] | None = None) -> dict[str, Any] | None:
    """The JSON object ``span`` holds (repaired when near-JSON), or None.

    ``statuses`` receives (key, value) for every status or verdict key met at any depth, duplicates
    included (``json.loads`` alone keeps only the last of two equal keys).
    """

    def hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        if statuses is not None:
            statuses.extend((k, v) for k, v in pairs if _KEYS.get(letters(str(k))) == "status")
        return dict(pairs)

    for candidate in (span, _repair(span) if len(span) <= _MAX_REPAIR else None):
        if candidate is None:
            continue
        if statuses is not None:
            statuses.clear()
        try:
            obj = json.loads(candidate, object_pairs_hook=hook)
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
    """Fields other than the status read as ``key: value`` pairs from text that is not (complete) JSON.

    ``at`` is where the verdict is written; each field is the first one written after it (a judge
    states the verdict, then explains), else the last one before it.
    """
    out: dict[str, Any] = {}
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


@dataclass(frozen=True)
class _Candidate:
    start: int
    status: str | None  # CORRECT / WRONG, or None when the value is not a clean status word
    value: str


def _candidates(text: str, response_letters: str, forced: bool = False) -> tuple[list[_Candidate], int, bool]:
    """(verdict candidates not copied from the response, how many were copied, more than MAX_VERDICTS?).

    ``forced``: the text starts with a status decoded under a constraint; that first one is clean.
    """
    found: list[_Candidate] = []
    copied = 0
    for m in _VERDICT.finditer(text):
        if forced and m.start() == _FORCED_AT and text[:m.end() + 1] in _FORCED_PREFIXES:
            found.append(_Candidate(m.start(), _STATUS_WORDS[m.group("value")], m.group("value")))
            continue
        key, value = m.group("key").lower(), m.group("value")
        word = _STATUS_WORDS.get(value.upper())
        if key == "verdict" and word is None:
            continue  # "My verdict: the solution..." is prose, not a field
        if response_letters and key + value.lower() in response_letters:
            copied += 1  # the judge reproduces the policy's text: that is the policy speaking, not the judge
            continue
        if len(found) == MAX_VERDICTS:
            return found, copied, True
        found.append(_Candidate(m.start(), word if _CLEAN_END.match(text, m.end()) else None, value))
    return found, copied, False


def _decide(text: str, response: str | None,
            forced: bool = False) -> tuple[str | None, str | None, _Candidate | None, int]:
    """(status, why not, the candidate to read the other fields at, verdicts copied from ``response``).

    Candidates are read twice: from the text as written (ASCII keywords only) and from its
    look-alike fold. The two readings must agree, so a verdict in disguise is never missed and
    never trusted.
    """
    response_letters = letters(response) if response else ""
    folded = fold(text)
    forced = forced and text.startswith(_FORCED_PREFIXES)
    seen, copied, too_many = _candidates(folded, response_letters, forced)
    if too_many:
        return None, f"more than {MAX_VERDICTS} verdicts in one reply", None, copied
    plain = seen if folded is text else _candidates(text, response_letters, forced)[0]
    if not seen and not plain:
        why = "only verdicts copied from the judged response" if copied else "no status field found"
        return None, why, None, copied
    if sorted(str(c.status) for c in seen) != sorted(str(c.status) for c in plain):
        return None, "a status written with look-alike or invisible characters", None, copied
    unclear = next((c for c in plain if c.status is None), None)
    if unclear is not None:
        return None, f"status {unclear.value[:40]!r} is not a clean CORRECT or WRONG", None, copied
    statuses = sorted({c.status for c in plain})  # type: ignore[type-var]
    if len(statuses) > 1:
        return None, "contradictory verdicts: CORRECT and WRONG", None, copied
    if statuses[0] == "CORRECT" and _SHOUTED_WRONG.search(folded):
        return None, "a CORRECT verdict beside the word WRONG", None, copied
    return statuses[0], None, plain[-1], copied


def _verdict_object(text: str, at: _Candidate, status: str,
                    response: str | None) -> tuple[dict[str, Any] | None, str | None]:
    """The fields of the JSON object holding the verdict at ``at`` (None if it is not in one), or why
    the object contradicts the verdict (a status the regex could not see, e.g. written as ``\\u0073tatus``)."""
    response_letters = letters(response) if response else ""
    for start, span in _objects(text):
        if start > at.start:
            break
        if at.start >= start + len(span):
            continue
        statuses: list[tuple[str, Any]] = []
        obj = _load(span, statuses)
        if obj is None:
            return None, None
        for key, value in statuses:
            if response_letters and letters(str(key)) + letters(str(value)) in response_letters:
                continue  # a quoted object nested in the judge's own
            if _status(value) != status:
                return None, "contradictory verdicts inside one JSON object"
        return _canonical(obj), None
    return None, None


def _status(value: Any) -> str | None:
    if not isinstance(value, str) or not value.isascii():
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


def parse_judgment_report(raw: str | None, steps: Sequence[str] | None = None,
                          response: str | None = None, forced_status: bool = False) -> ParseResult:
    """Parse ``raw`` and say what was missing; ``steps`` (the segmented solution) bounds error_step.

    ``response`` is the judged text: a verdict in the reply that reproduces it is the policy's, not
    the judge's, and is dropped (counted in :attr:`ParseResult.copied`). ``forced_status``: the reply
    starts with ``{"status": "CORRECT"`` or ``{"status": "WRONG"`` decoded under a constraint (the
    local backend), so that first verdict is the judge's own and clean whatever free text follows it;
    any other verdict in the reply must still agree with it. Linear in ``len(raw)``.
    """
    raw = raw or ""
    text = _FENCE.sub("", raw)
    notes: list[str] = []
    status, why, at, copied = _decide(text, response, forced_status)
    if copied:
        notes.append(f"{copied} verdict(s) copied from the judged response ignored")
    fields: dict[str, Any] = {}
    if status is not None and at is not None:
        obj, why = _verdict_object(text, at, status, response)
        if obj is not None:
            fields = obj
        elif why is None:
            fields = _by_pattern(text, at.start)
            notes.append("no complete JSON object; fields read as key: value text")
    if status is None or why is not None:
        return ParseResult(Judgment(status="WRONG", score=0.0, raw=raw, parse_error=why), tuple(notes), copied)

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
    return ParseResult(judgment, tuple(notes), copied)


# Counter names for the reasons a reply is not read (``Judge.metrics``: ``orm/parse_failure/<kind>``).
_FAILURE_KINDS = (("no status field", "no_status"), ("copied from the judged response", "copied_only"),
                  ("look-alike", "look_alike"), ("not a clean", "unclear_status"), ("contradictory", "contradictory"),
                  ("beside the word", "contradictory"), ("more than", "too_many_verdicts"))


def parse_failure_kind(parse_error: str) -> str:
    """A short name for a ``parse_error`` message, for counters.

    >>> parse_failure_kind("contradictory verdicts: CORRECT and WRONG")
    'contradictory'
    """
    return next((kind for text, kind in _FAILURE_KINDS if text in parse_error), "other")


def parse_judgment(raw: str | None, steps: Sequence[str] | None = None, response: str | None = None) -> Judgment:
    """Parse a judge reply; see :func:`parse_judgment_report` for the notes on gaps."""
    return parse_judgment_report(raw, steps, response).judgment
