"""The verifier pipeline: extract -> parse -> compare (fast path) -> symbolic pool (rare).

>>> fast_verify("The answer to this problem is 12.", "12")
(Verdict(correct=True, pred='12', reason='exact'), None)
>>> fast_verify(r"\\boxed{\\int_0^1 x\\,dx}", "1/2")[1]  # undecided: goes to the worker pool
'\\\\int_0^1 x dx'
"""

from __future__ import annotations

import functools
import re
from typing import Sequence

from mathse_rl.types import Verdict
from mathse_rl.verify.answer import Answer, AnswerError, Latex, Letter, Relation, Scalar, Text, parse_answer
from mathse_rl.verify.cache import bounded_cache
from mathse_rl.verify.compare import equal, relation_value
from mathse_rl.verify.extract import UNDECIDED, extract, has_box, is_prose, sentence_answer
from mathse_rl.verify.text import normalise_latex, strip_wrappers, text_key

_MAX_PRED_IN_VERDICT = 200  # a refused over-long answer is reported by its head only
_CHOICE_PREFIX = re.compile(r"^\(?([A-J])\)?\s*[.:)：]\s*(.+)$", re.S)
_HEDGE = re.compile(r"^\(?[A-J]\)?\s*(?:or|/|或|、|,)\s*\(?[A-J]\)?(?![a-zA-Z])", re.I)
# Words and marks that may join option letters in a hedge: "A B", "(A)(B)", "A & B", "A (or B)", "A. B".
_HEDGE_JOINERS = re.compile(r"\\text\{|\\textbf\{|\\mathrm\{|[(){}\[\].,;:&/|+*、，或和\s-]|\b(?:or|and|either|maybe|possibly)\b",
                            re.I)
# After the stated answer: the response revises it ("Wait, no, it is 4", "Actually the answer is 4").
_REVISION = re.compile(r"\b(?:wait|actually|oops|correction|on second thought|i made a mistake|"
                       r"let me re-?(?:check|calculate|compute|consider|do)|re-?calculat\w*|i mean|"
                       r"no,\s+(?:it|that|the answer)\b|not\s+\S+\s*,\s*but)|不对|错了|更正", re.I)
# After the stated answer: the output runs on into another prompt ("Question: ...", "Choices:").
_RUNAWAY = re.compile(r"^\s*(?:question|problem|hint|choices|q|问题|题目)\s*\d*\s*[:：]", re.I | re.M)
# A restated answer line in a run-on ("Question: ...\n\nAnswer: 1.").
_ANSWER_LINE = re.compile(r"^\s*\**answer\**\s*[:：]\s*(?=\S)", re.I | re.M)
# After the stated answer: another final answer ("... So the answer is 15."). Intermediate results in an
# explanation written after the answer ("Therefore, x = 13") are not answers and do not count.
_LATER = re.compile(r"\b(?:final answer|(?:the|my|correct|right)\s+answer|(?:correct|right)\s+(?:option|choice))\s*"
                    r"(?:is|would be|should be|will be|[:：])\s*(?=\S)", re.I)
# An answer offered beside the stated one: "A, but B also works", "12; 15 is also acceptable", "Alternatively, B".
_VALUE = r"(?:(?<![A-Za-z])\(?[A-J]\)?(?![A-Za-z'])|-?[0-9][0-9.,/]*|\$[^$\n]{1,40}\$|\\frac\{[^{}]*\}\{[^{}]*\})"
_ALTERNATIVE = re.compile(
    r"(?P<v1>" + _VALUE + r")\s*(?:(?:is|would|could|may|might|can|will)\s+)?(?:be\s+)?(?:also|too|as well|equally)\b|"
    r"(?P<v2>" + _VALUE + r")\s+(?:works|work|is correct|is right|is valid|is possible|is acceptable)\s+(?:too|as well)\b|"
    r"\b(?:could|might|may|can)\s+also\s+be\s+(?P<v3>" + _VALUE + r")|"
    r"\b(?:alternatively|otherwise|or possibly|or perhaps|or maybe|unless it is|unless it's|also accept(?:able)?)\b[,:]?\s*"
    r"(?:(?:the answer is|it is|it's)\s+)?(?P<v4>" + _VALUE + r")|"
    r"^\W{0,3}\s*(?:or|and/or)\s+(?:option\s+|choice\s+)?(?P<v5>" + _VALUE + r")", re.I)


@bounded_cache(max_entries=65536, max_chars=16 << 20)  # bounded by key size too: golds can be megabytes
def parse_gold(gold: str | None) -> Answer | None:
    """The parsed reference answer, or None when it is missing or unreadable (cached).

    >>> parse_gold("$\\\\frac{1}{2}$").kind
    'scalar'
    >>> parse_gold("") is None
    True
    """
    if gold is None:
        return None
    gold = gold_text(gold)
    if not gold or not strip_wrappers(gold):
        return None
    try:
        return parse_answer(gold)
    except AnswerError:
        return None


_GOLD_SOLUTION_CHARS = 80  # a longer gold with math in prose is a worked solution: its final answer is the gold


@bounded_cache(max_entries=65536, max_chars=16 << 20)  # keys are whole reference answers, like parse_gold's
def gold_text(gold: str) -> str:
    """The answer a reference states: itself, or the final (boxed or stated) answer of a gold
    given as a worked solution or with text around a boxed value.

    >>> gold_text("so $f(0) = -1$ and the answer is \\\\boxed{-1}.")
    '-1'
    >>> gold_text("\\\\(\\\\boxed{1}\\\\) and \\\\(\\\\boxed{-2}\\\\).")
    '1, -2'
    """
    g = str(gold).strip()
    if has_box(g) or (len(g) > _GOLD_SOLUTION_CHARS and re.search(r"\$|\\\(|\\\[", g) and is_prose(g)):
        found = extract(g).answer
        if found:
            return found
    return g


def gold_is_valid(gold: str | None) -> bool:
    """Whether ``gold`` can be checked against at all (the trl adapter returns None otherwise)."""
    return parse_gold(gold) is not None


@functools.lru_cache(maxsize=4096)
def _parse_choices(choices: tuple[str, ...]) -> tuple[Answer | None, ...]:
    out = []
    for i, c in enumerate(choices):
        text = str(c).strip()
        m = _CHOICE_PREFIX.match(text)
        if m and m.group(1) == chr(ord("A") + i):
            text = m.group(2)  # options written with their own letter: "B. 60°"
        try:
            out.append(parse_answer(text, allow_letter=False))
        except AnswerError:
            out.append(None)
    return tuple(out)


def _option_written_as(text: str, choices: tuple[str, ...]) -> int | None:
    """The index of the one option written exactly as ``text`` (spacing and case aside), else None."""
    key = text_key(normalise_latex(strip_wrappers(str(text))))
    hits = [i for i, c in enumerate(choices)
            if text_key(normalise_latex(strip_wrappers(_CHOICE_PREFIX.sub(r"\2", str(c).strip())))) == key]
    return hits[0] if len(hits) == 1 else None


def _index(letter: str) -> int:
    return ord(letter) - ord("A")


def _matching(ans: Answer, parsed: tuple[Answer | None, ...]) -> list[int]:
    return [i for i, c in enumerate(parsed) if c is not None and equal(ans, c)[0]]


def _contradicts(pred: Letter, parsed: tuple[Answer | None, ...]) -> bool:
    """Whether the text written after an option letter is not that option: "(D) 140°" where D is 20°.
    Numbers must agree; words only contradict when they are another option's own text."""
    if pred.rest is None:
        return False
    idx = _index(pred.letter)
    target = parsed[idx]
    if target is None:
        return False
    ok, _ = equal(pred.rest, target)
    if ok:
        return False
    if any(i != idx and c is not None and equal(pred.rest, c)[0] for i, c in enumerate(parsed)):
        return True
    if is_prose(pred.rest.raw):
        return False  # "D. Therefore, the perimeter is 16": a sentence after the letter, not the option's text
    constant = all(isinstance(x, Scalar) and not x.vars and x.value is not None for x in (pred.rest, target))
    return ok is False and constant  # "(D) 140°" against 20°; never a form the parser reads two ways ("5√3 m")


def _choice_outcome(pred: Answer, gold: Answer, choices: tuple[str, ...] | None) -> tuple[bool | None, str] | None:
    """Multiple choice through the options, both ways; None when no option logic applies."""
    parsed = _parse_choices(choices) if choices else ()
    g_letter = gold.letter if isinstance(gold, Letter) and (not choices or _index(gold.letter) < len(choices)) else None
    p_letter = pred.letter if isinstance(pred, Letter) and (not choices or _index(pred.letter) < len(choices)) else None
    if p_letter is not None and parsed and _contradicts(pred, parsed):
        return False, "mismatch"
    if g_letter is None and p_letter is None:
        if not parsed:
            return None
        g_idx = _matching(gold, parsed)
        p_idx = _matching(pred, parsed)
        if g_idx and p_idx and not set(g_idx) & set(p_idx):
            return False, "mismatch"
        return None
    if g_letter is not None and p_letter is not None:
        return (g_letter == p_letter), "choice" if g_letter == p_letter else "mismatch"
    if not parsed:
        # A letter against a value with no options to map through.
        if isinstance(gold, Letter) and gold.rest is not None and isinstance(pred, Answer):
            ok, _ = equal(pred, gold.rest)
            return bool(ok), "choice" if ok else "mismatch"
        if isinstance(pred, Letter) and pred.rest is not None:
            ok, why = equal(pred.rest, gold)
            return bool(ok), "choice" if ok else "mismatch"
        return False, "mismatch"
    if g_letter is not None:
        target = parsed[_index(g_letter)]
        if target is None:
            return False, "mismatch"
        ok, _ = equal(pred, target)
        if ok:
            return True, "choice"
        return False, "mismatch"
    gold_at = _option_written_as(gold.raw, choices)
    if gold_at is not None:  # the gold is one option's own text: the letters decide ("0.0 - 0.2" vs "0.4 - 0.6")
        same = gold_at == _index(p_letter)
        return same, "choice" if same else "mismatch"
    target = parsed[_index(p_letter)]
    if target is None:
        return False, "mismatch"
    ok, _ = equal(target, gold)
    if ok:
        return True, "choice"
    if ok is None:
        return None
    return False, "mismatch"


def _is_hedge(pred_text: str) -> bool:
    """Two or more different option letters and nothing else ("A B", "(A)(B)", "A & B", "A (or B)"), or
    two different options named in parentheses ("(B) 13 and (C) 26")."""
    rest = _HEDGE_JOINERS.sub(" ", strip_wrappers(pred_text))
    tokens = rest.split()
    if len(tokens) >= 2 and all(re.fullmatch(r"[A-J]", t) for t in tokens) and len(set(tokens)) >= 2:
        return True
    return len(set(_NAMED_OPTION.findall(pred_text))) >= 2


_NAMED_OPTION = re.compile(r"(?<![A-Za-z(])\(?([A-J])(?:\)|\.(?=\s))")  # "(B)", "B)", "B. 16"; never "f(B)"


def _offers_alternative(pred_text: str, after: str) -> bool:
    """Whether another answer is offered beside the stated one ("A, but B also works")."""
    own = re.sub(r"[\s()$*]", "", strip_wrappers(pred_text).split(",")[0])
    for text in (pred_text, after[:400]):
        for m in _ALTERNATIVE.finditer(text):
            value = next(v for v in m.group("v1", "v2", "v3", "v4", "v5") if v is not None)
            if re.sub(r"[\s()$*]", "", value).rstrip(".,") != own:
                return True
    return False


def _revised(after: str, gold: Answer, choices_t: tuple[str, ...] | None) -> bool:
    """Whether the text after an accepted answer takes it back or states a different one."""
    after = after.strip()
    if not after:
        return False
    if _REVISION.search(after) or UNDECIDED.search(after[:_AFTER_WINDOW]):
        return True
    runaway = _RUNAWAY.search(after) is not None
    # A run-on into another prompt is read whole: it stands only when it restates this answer and no other.
    window = after if runaway else after[:_AFTER_WINDOW]
    stated = sorted([*_LATER.finditer(window), *(_ANSWER_LINE.finditer(window) if runaway else ())],
                    key=lambda m: m.start())
    restated = 0
    for m in stated:
        later = sentence_answer(window[m.end():])
        if not later:
            continue
        try:
            p = parse_answer(later)
        except AnswerError:
            continue
        if isinstance(p, Relation):
            p, _ = relation_value(p)
            if p is None:
                continue  # "the answer is x^2 = 4": not a value, and not this module's business here
        if isinstance(p, (Latex,)) or (isinstance(p, Text) and not (isinstance(gold, (Text, Letter)) or choices_t)):
            continue  # words or a form the fast path cannot compare: no contradiction it can tell
        outcome = _choice_outcome(p, gold, choices_t) or equal(p, gold)
        if outcome[0] is False:
            return True
        restated += outcome[0] is True
    return runaway and not restated


_AFTER_WINDOW = 2000  # characters after the answer searched for a revision, a refusal or a later answer


def fast_verify(response: str, gold: str, choices: Sequence[str] | None = None, strict: bool = False,
                cues: Sequence[str] | None = None) -> tuple[Verdict, str | None]:
    """The in-process decision. Returns (verdict, None) when decided, or a provisional
    verdict plus the normalised prediction to hand to the symbolic path.

    ``strict``: a response that does not state its final answer is refused ("no_final_answer")."""
    g = parse_gold(gold)
    if g is None:
        return Verdict(False, None, "no_gold"), None
    choices_t = tuple(str(c) for c in choices) if choices else None
    ex = extract(response, choices_t, strict, tuple(cues) if cues is not None else None)
    pred_text = ex.answer
    if pred_text is None:
        return Verdict(False, None, "no_final_answer" if strict else "no_answer"), None
    if (isinstance(g, Letter) or choices_t) and (_HEDGE.match(strip_wrappers(pred_text)) or _is_hedge(pred_text)):
        return Verdict(False, pred_text, "hedged"), None
    verdict, sym = _judge(pred_text, gold_text(gold), g, choices_t)
    if (verdict.correct or sym is not None) and (_REVISION.search(pred_text) or _revised(ex.after, g, choices_t)
                                                 or _offers_alternative(pred_text, ex.after)):
        return Verdict(False, pred_text, "hedged"), None
    return verdict, sym


def _judge(pred_text: str, gold: str, g: Answer, choices_t: tuple[str, ...] | None) -> tuple[Verdict, str | None]:
    """The fast path's decision on one extracted answer."""
    try:
        p = parse_answer(pred_text)
    except AnswerError as err:
        return Verdict(False, pred_text[:_MAX_PRED_IN_VERDICT], str(err)), None
    if normalise_latex(strip_wrappers(pred_text)) == normalise_latex(strip_wrappers(str(gold))) and not isinstance(p, Text):
        return Verdict(True, pred_text, "exact"), None
    outcome = _choice_outcome(p, g, choices_t)
    if outcome is None:
        outcome = equal(p, g)
    ok, why = outcome
    if ok is None:
        sym = normalise_latex(strip_wrappers(pred_text))
        if not sym.isascii() and any(ord(c) > 127 and c not in normalise_latex(str(gold)) for c in sym):
            return Verdict(False, pred_text, "mismatch"), None  # symbols the fast path does not know: never guessed
        return Verdict(False, pred_text, why), sym
    return Verdict(bool(ok), pred_text, why if ok or why != "numeric" else "mismatch"), None
