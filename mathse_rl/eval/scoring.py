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


# An option letter leading a reading, with the option's text or a sentence after it: "D. Indigo has ...", "D, Dark Seafoam".
_LETTER_FIRST = re.compile(r"^[*_\s]*([A-Z])(?:[.,:)][*_]*\s+\S|[.,:)]?[*_]*\s*$)")


def release_form(extraction: str | None) -> str:
    """An extraction as MathVista's extractor writes it for its normalisation: "" when nothing was read
    (what its pipeline gives an empty response), an option letter alone when the reading leads with one
    (its prompt's example reduces "(B) 8/11" to "B"); anything else as read.

        >>> release_form(None), release_form("D. Indigo has the lowest value"), release_form("A or B")
        ('', 'D', 'A or B')
    """
    if not extraction:
        return ""
    m = _LETTER_FIRST.match(extraction)
    return m.group(1) if m else str(extraction)


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


_AUXILIARY = re.compile(r"^\s*(?:is|are|does|do|did|was|were|has|have|can|will)\s+", re.I)
_FILLER = frozenset("the a an of that which who is are was were be been does do did has have had there this these those it "
                    "its in on at to for by and".split())
_NEGATION = frozenset("not no never neither nor none cannot".split())
# A sentence that leaves the question open, or asks it: no answer in it.
_OPEN = re.compile(r"\?|\b(?:whether|if|unclear|uncertain|may|might|possibly|perhaps|maybe|could|can't|cannot|"
                   r"impossible|not possible|not sure|difficult to)\b", re.I)


def _tokens(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+(?:'[a-z]+)?", text.lower())


def _same_word(a: str, b: str) -> bool:
    return a == b or (len(a) > 3 and a.rstrip("s") == b.rstrip("s"))


def _restates(words: list[str], sentence: list[str]) -> bool:
    """Whether ``words`` occur in ``sentence`` in their order (other words between them allowed)."""
    i = 0
    for token in sentence:
        if i < len(words) and _same_word(token, words[i]):
            i += 1
    return i == len(words)


def restated_yes_no(question: str, response: str, choices: Sequence[str]) -> int | None:
    """The yes/no option a reply chose by restating the question: the question's words in their order
    as a statement ("There are fewer metallic fighters than rubber objects." answers "Are there fewer
    metallic fighters than rubber objects?" with yes) or negated ("Periwinkle is not the maximum.": no),
    in its first or last sentence; None when it does neither, or both, or leaves the question open.

        >>> restated_yes_no("Is Periwinkle the maximum?", "Periwinkle is not the maximum.", ["yes", "no"])
        1
    """
    keys = [str(c).strip().lower() for c in choices]
    if sorted(keys) != ["no", "yes"]:
        return None
    q = str(question).strip()
    aux = _AUXILIARY.match(q)
    if aux is None or not q.endswith("?") or re.search(r"[<>=]", q):
        return None
    asked = _tokens(q[aux.end():])
    content = [w for w in asked if w not in _FILLER]
    if sum(w.isalpha() for w in content) < 2:
        return None
    sentences = [t.strip() for t in re.split(r"(?<=[.!?])\s+|\n+", str(response).strip()) if t.strip()]
    said = set()
    for sentence in {sentences[0], sentences[-1]} if sentences else ():
        words = _tokens(sentence)
        if _OPEN.search(sentence) or not _restates(content, words):
            continue
        negated = any(w in _NEGATION and w not in asked for w in words) or any(w.endswith("n't") for w in words)
        said.add("no" if negated else "yes")
    return keys.index(said.pop()) if len(said) == 1 else None


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


def number_value(text: str | None) -> float | None:
    """The real number a short answer denotes, LaTeX evaluated ("\\frac{1}{300}", "\\sqrt{2018^2+2}",
    "120^\\circ"), as a benchmark that evaluates its answers compares it; None for anything with a
    variable, a unit or a percent sign, and for words.

        >>> number_value("$1/4$"), number_value("2x"), number_value("5 cm")
        (0.25, None, None)
    """
    from mathse_rl.verify.answer import AnswerError, Scalar, parse_answer

    if text is None or not str(text).strip() or len(str(text)) > 200:
        return None
    try:
        a = parse_answer(str(text).strip().strip("$").strip())
    except AnswerError:
        return None
    if not isinstance(a, Scalar) or a.vars or a.value is None or a.value.imag or a.unit or a.unit_word or a.percent:
        return None
    return float(a.value.real)


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

