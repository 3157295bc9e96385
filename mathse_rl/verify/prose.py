"""Options answered in prose, without a cue or a letter (lenient extraction only).

Short replies of vision-language models answer a multiple-choice question in words: "No, Orange Red is
not the high median.", "The solution with a higher concentration is Solution B.", "If all the algae
dies, the water flea population will decrease. This is because ...". These read the option such a
reply names, and nothing when it names two, negates the one it names, or names none.

    >>> leading_option("No, Orange Red is not the high median.", ["yes", "no"])
    ('No', 2)
    >>> option_ending_sentence("The population will decrease. It eats algae.", ["decrease", "increase"])
    ('decrease', 0)
    >>> option_ending_sentence("It will not decrease.", ["decrease", "increase"]) is None
    True
    >>> option_opening_sentence("If plants die, grasshoppers would be most affected.", ["Grasshopper", "Hawk"])
    'Grasshopper'
"""

from __future__ import annotations

import re
from typing import Sequence

_MAX_OPTION_WORDS = 3  # a leading option is a short one: "No", "False", "Tokyo"
_MAX_SENTENCE = 400  # longer "sentences" are not answer sentences
_MARKUP = re.compile(r"[*_`$]")
# Where a sentence ends: its mark (with closing quotes or brackets after it), or a line break.
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"'”’)]*\s+|\n+")
# Where a sentence's main clause ends: a clause that gives the reason or goes on with something else.
_CLAUSE_END = re.compile(r",\s+(?:as|because|since|which|so|and|while|but|with|leading|meaning|indicating|written|"
                         r"followed|shown|given)\b|\s+(?:because|since|as|which|while)\s+", re.I)
_NEGATION = re.compile(r"\b(?:not|no|never|neither|nor|cannot|can't|won't|isn't|aren't|wasn't|weren't|doesn't|"
                       r"don't|didn't)\W*$|n't\W*$", re.I)
_TAIL = r"[\s.,;:!\"'”’)*_]*$"
_LETTER_MARK = re.compile(r"^\(?[A-J]\)?\s*[-–—:.)]\s")
_ANSWER_LABEL = re.compile(r"A\s*[:：]\s*(?=\S)")
_PLEASANTRY = re.compile(r"^(?:i hope|let me know|do you|is there|feel free|if you have)\b", re.I)
# A line of an echoed option list ("(B) no") or prompt ("Choices:") names no choice.
_ECHO = re.compile(r"^(?:\(?[A-J]\)|[A-J][.:])\s|^(?:choices|options|question|hint)\s*[:：]", re.I)


def _words(option: str) -> list[str]:
    """An option's words; a hyphen between letters parts words too ("PDE-Refiner" is written "PDE Refiner")."""
    return [w for w in _WORD_SPLIT.split(_MARKUP.sub("", str(option))) if w]


_WORD_SPLIT = re.compile(r"\s+|(?<=[A-Za-z])-(?=[A-Za-z])")
_GAP = r"(?:\s+|(?<=[A-Za-z])-(?=[A-Za-z]))"  # between two words of an option: spaces, or a hyphen between letters


def _joined(words: list[str]) -> str:
    """The words as a pattern, the last one in the singular or the plural ("superior lobe" names "Superior lobes")."""
    *head, last = words
    tail = re.escape(last)
    if len(words) > 1 and re.fullmatch(r"[a-z]{4,}", last, re.I):
        plural = re.search(r"[^siu]s$", last, re.I) is not None  # "lobes", never "grass", "virus", "axis"
        tail = re.escape(last[:-1]) + "s?" if plural else tail + "s?"
    return _GAP.join([re.escape(w) for w in head] + [tail])


def _option_pattern(option: str) -> re.Pattern | None:
    words = _words(option)
    if not words:
        return None
    body = _joined(words)
    # Never the end of a longer token: "15m" does not end with the option "5m", "grasshoppers" not with "hoppers".
    return re.compile(r"(?<![\w√{}^.\-+/])" + body + _TAIL, re.I)


def leading_option(text: str, choices: Sequence[str]) -> tuple[str, int] | None:
    """The one short word option the reply opens with, followed by punctuation ("No, ...", "False. ..."),
    as written, and where the rest of the reply starts; None when a later sentence opens with another."""
    body = text.lstrip(" \t\n*_\"“'")
    label = _ANSWER_LABEL.match(body)
    if label is not None:  # "A: no" in a question-and-answer format labels the answer
        body = body[label.end():]
    offset = len(text) - len(body)
    found = None
    for c in choices:
        words = _words(c)
        if not words or len(words) > _MAX_OPTION_WORDS or not re.search(r"[A-Za-z]{2}", c):
            continue  # letters and numbers are read elsewhere
        m = re.match(r"\s+".join(re.escape(w) for w in words) + r"(?=\**\s*(?:[,.;:!]|$))", body, re.I)
        if m and (found is None or m.end() > found[1]):
            found = (c, m.end())
    if found is None:
        return None
    others = [c for c in choices if _words(c) and _words(c) != _words(found[0])]
    for start in (m.end() for m in _SENTENCE_END.finditer(body)):
        if any(re.match(r"\s+".join(re.escape(w) for w in _words(c)) + r"\**\s*[,.;:!]", body[start:], re.I)
               for c in others):
            return None  # "No. ... Yes, it is.": both
    return body[:found[1]], offset + found[1]


def _sentences(text: str) -> list[tuple[int, str]]:
    out, start = [], 0
    for m in _SENTENCE_END.finditer(text):
        out.append((start, text[start:m.start()]))
        start = m.end()
    out.append((start, text[start:]))
    return [(i, s.strip()) for i, s in out if s.strip()]


def _named_in(sentence: str, patterns: list[tuple[str, re.Pattern]]) -> set[str]:
    """The options whose own text ends the main clause of ``sentence`` (the longest such text; none negated)."""
    if len(sentence) > _MAX_SENTENCE or sentence.rstrip().endswith("?"):
        return set()
    cut = _CLAUSE_END.search(sentence)
    clause = _MARKUP.sub("", sentence[:cut.start()] if cut else sentence).strip()
    hits = []
    for option, rx in patterns:
        m = rx.search(clause)
        if m and not _NEGATION.search(clause[:m.start()]):
            hits.append((m.start(), option))
    if not hits:
        return set()
    first = min(at for at, _ in hits)  # "quarter past" over "past": the longest text that ends the clause
    named = {option for at, option in hits if at == first}
    key = {" ".join(_words(o)).lower() for o in named}
    main = _LEAD_CLAUSE.sub("", clause[:first], 1)  # "If pelicans increase, ... may decrease": a condition before it
    for option, _rx in patterns:  # "... two solutions, Solution A and Solution B.": two options named
        words = _words(option)
        if " ".join(words).lower() not in key and re.search(r"(?<![\w√{}^.\-+/])" + _joined(words)
                                                            + r"(?![\w√{}])", main, re.I):
            return {option} | named
    return named


def option_ending_sentence(text: str, choices: Sequence[str]) -> tuple[str, int] | None:
    """The one option whose own text ends the main clause of the reply's first sentence (an answer
    first) or its last sentence (an answer last), and where that sentence starts; None when these
    name different options or a sentence names two."""
    patterns = [(str(c), rx) for c in choices if (rx := _option_pattern(str(c))) is not None]
    if _LETTER_MARK.match(text.strip()):
        return None  # "C - All of above": the letter decides, not the text after it
    sentences = [s for s in _sentences(text) if not _PLEASANTRY.match(s[1]) and not _ECHO.match(s[1])]
    if not patterns or not sentences:
        return None
    named: set[str] = set()
    at = None
    for start, sentence in {sentences[0], sentences[-1]}:
        hits = _named_in(sentence, patterns)
        if len({" ".join(_words(h)).lower() for h in hits}) > 1:
            return None
        if hits:
            named |= hits
            at = start if at is None else min(at, start)
    keys = {" ".join(_words(h)).lower() for h in named}
    if len(keys) != 1 or at is None:
        return None
    return sorted(named)[0], at


# A clause before the subject of the first sentence: "If there was a shortage of plants, grasshoppers would ..."
_LEAD_CLAUSE = re.compile(r"^(?:if|when|since|because|based on|according to|in|from|looking at|after)\b[^,.]{0,150},\s*", re.I)
_VERB = (r"(?:is|are|was|were|has|have|had|would|will|can|could|may|might|should|does|do|did|seems?|appears?|"
         r"shows?|gets?|holds?|contains?|needs?)\b")


def option_opening_sentence(text: str, choices: Sequence[str]) -> str | None:
    """The one option whose own text (a plural allowed) is the subject that opens the reply's first sentence
    ("Solution A has a higher concentration ...", "If plants die, grasshoppers would be most affected.");
    None when the sentence names another option too or negates its verb."""
    sentences = _sentences(text)
    if not sentences:
        return None
    first = _MARKUP.sub("", sentences[0][1])
    if len(first) > _MAX_SENTENCE or first.endswith("?"):
        return None
    body = _LEAD_CLAUSE.sub("", first, 1)
    body = re.sub(r"^(?:the|a|an)\s+", "", body, flags=re.I)
    found = []
    for c in choices:
        words = _words(c)
        if not words or len(words) > 4 or not re.search(r"[A-Za-z]{2}", c):
            continue
        m = re.match(_GAP.join(re.escape(w) for w in words) + r"(?:e?s)?\s+" + _VERB + r"(?!\s+not\b|n't)", body, re.I)
        if m:
            found.append(str(c))
    if len(found) != 1:
        return None
    others = [o for c in choices if str(c) != found[0] and (o := _option_pattern(str(c)).pattern.replace(_TAIL, ""))]
    if any(re.search(o + r"(?:e?s)?\b", body, re.I) for o in others):
        return None  # "Solution A has more than Solution B": two options named
    return found[0]
