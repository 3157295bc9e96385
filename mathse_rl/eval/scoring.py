"""Scoring helpers shared by the benchmarks: the verifier extracts and compares; these apply
the few rules benchmarks add on top (which option a response chose, a number at a precision).

    >>> chosen_option("so the answer is (B).", ["97", "102"])
    (1, Verdict(correct=True, pred='(B)', reason='choice'))
    >>> plain_number("1,234.5 cm"), plain_number("x = 3"), plain_number("about 14.3"), plain_number("2 or 3")
    (1234.5, 3.0, 14.3, None)
"""

from __future__ import annotations

import re
from typing import Sequence

from mathse_rl.types import Verdict
from mathse_rl.verify import verify

# A response longer than this is scored on its tail (the verifier reads at most its last 16k characters).
VERIFY_TIMEOUT = 5.0

_ANY_NUMBER = re.compile(r"(?<![\w.])[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?![\w.])")
_FEW_WORDS = 4
_NUMBER = re.compile(r"^[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)?(?:\.\d+)?(?:[eE][-+]?\d+)?")


def chosen_option(response: str, choices: Sequence[str], timeout: float = VERIFY_TIMEOUT) -> tuple[int | None, Verdict]:
    """The one option the response chose, by the verifier asked about each option in turn.

    Returns ``(index, verdict)``: the verdict against the chosen option, or (None, the first
    option's verdict) when the response chose none or could be read as several (a hedge, two
    options with equal values): such a response chose nothing.
    """
    verdicts = [verify(response or "", str(c), choices=list(choices), timeout=timeout) for c in choices]
    hits = [i for i, v in enumerate(verdicts) if v.correct]
    texts = {str(choices[i]).strip() for i in hits}
    if hits and len(texts) == 1:  # the same text listed twice is still one answer
        return hits[0], verdicts[hits[0]]
    if len(hits) > 1:
        return None, Verdict(False, verdicts[hits[0]].pred, "ambiguous")
    first = verdicts[0] if verdicts else Verdict(False, None, "no_answer")
    if first.reason in _UNREAD:  # the verifier found an answer it could not tie to an option: read it as a benchmark does
        named = option_named(first.pred, choices)
        # ... unless, asked about that very option, the verifier refused it (a hedge, a revision, runaway text)
        if named is not None and verdicts[named].reason in _UNREAD:
            return named, Verdict(True, first.pred, "option_named")
    return None, first


# Verifier reasons after which an extraction may still name an option ("(B) no**" read whole); never
# after a hedge, a revision or a time-out.
_UNREAD = ("mismatch", "parse_error", "no_option", "text", "unparsed", "too_long")


_PAREN_LETTER = re.compile(r"\(([A-Za-z])\)")
_LEAD_LETTER = re.compile(r"^\W*([A-Z])(?:\W|$)")
_MARKUP = re.compile(r"[*_`$]|\\text\{|\\textbf\{|\\mathrm\{|[{}]")


def option_named(extraction: str | None, choices: Sequence[str]) -> int | None:
    """The option an extracted answer names, by the rule benchmarks apply to an extraction: a letter in
    parentheses (the first one, as MathVista's ``normalize_extracted_answer``), a leading option
    letter ("B. no", "B: 60°"), or the option's own text (case, markup and final punctuation aside).

        >>> option_named("(B) no**", ["yes", "no"]), option_named("No.", ["Yes", "No"]), option_named("maybe", ["a"])
        (1, 1, None)
    """
    if not extraction or not choices:
        return None
    text = str(extraction).strip()
    letters = [chr(ord("A") + i) for i in range(len(choices))]
    m = _PAREN_LETTER.search(text)
    if m and m.group(1).upper() in letters:
        return letters.index(m.group(1).upper())
    m = _LEAD_LETTER.match(text)
    if m and m.group(1) in letters and (len(text.strip("*_() .:")) == 1 or re.match(r"^\W*[A-Z]\s*[.:)]", text)):
        return letters.index(m.group(1))
    key = _plain(text)
    hits = [i for i, c in enumerate(choices) if _plain(str(c)) == key]
    return hits[0] if len({_plain(str(choices[i])) for i in hits}) == 1 else None


def nearest_option(text: str, choices: Sequence[str]) -> int:
    """MathVista's normalisation of an extraction to an option (``normalize_extracted_answer``): the
    first letter in parentheses replaces the text; a letter of an option is that option; anything
    else gets the option with the smallest edit distance to it (the first on a tie).

        >>> nearest_option("about 60 degrees", ["30°", "60°", "60 degrees"]), nearest_option("(C) yes", ["Yes", "No"])
        (2, 1)
    """
    text = str(text).strip()
    letters = _PAREN_LETTER.findall(text)
    if letters:
        text = letters[0].upper()
    if len(text) == 1 and "A" <= text < chr(ord("A") + len(choices)):
        return ord(text) - ord("A")
    dists = [edit_distance(text, str(c)) for c in choices]
    return dists.index(min(dists))


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance (insertions, deletions, substitutions of one character each)."""
    if len(a) < len(b):
        a, b = b, a
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def _plain(s: str) -> str:
    return re.sub(r"\s+", " ", _MARKUP.sub("", s)).strip(" .,;:!").lower()


def plain_number(text: str | None) -> float | None:
    """The number a short answer starts with (thousands commas, a leading ``$``/``\\$`` and trailing
    units allowed; an equation's right side), as benchmarks that apply ``float()`` to an extracted
    answer read it; None otherwise."""
    if text is None:
        return None
    # An equation or approximation answers with its right side ("a = 1.24 m/s^2", "x \\approx 3.1").
    s = re.split(r"=|\\approx|≈", str(text))[-1].strip().strip("$")
    for mark, plain in (("\\$", ""), ("\\!", ""), ("{,}", ","), ("\\left", ""), ("\\right", "")):
        s = s.replace(mark, plain)
    s = s.strip()
    m = _NUMBER.match(s)
    if not m or not re.search(r"\d", m.group(0)):
        # A few words around one number ("about 14.3", "roughly 12 cm"): that number.
        found = list(_ANY_NUMBER.finditer(s))
        if len(found) != 1 or len(s.split()) > _FEW_WORDS:
            return None
        s = s[found[0].start():]
        m = _NUMBER.match(s)
    rest = s[m.end():].strip()
    # A number followed by more math (an operator, a fraction bar, a power) is not this number, nor is
    # one followed by another number ("2 or 3"; a unit's power, "m^2", is no number).
    if rest and (re.match(r"^[\d(/^*+\-=×÷.]|^\\(?:frac|sqrt|times|cdot|pi)", rest)
                 or re.search(r"(?<![\^\w.{])\d", rest)):
        return None
    try:
        return float(m.group(0).replace(",", ""))
    except ValueError:
        return None

