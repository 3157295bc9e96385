"""Find the final answer in a free-form response, most specific form first.

Order: text after the last ``</think>``; the last ``\\boxed{}``/``\\fbox{}`` group (several
boxes written together form a set); the last ``<answer>...</answer>`` block; the answer
phrases ("The answer to this problem is", "final answer is", "Answer:", 答案是/答案为/故选,
"the correct option is", "####"); an option written
as ``Option B``/``(B)`` when choices are given; the last number in the text.

``strict=True`` (acceptance in training) keeps only answers the response *states*: a box,
an ``<answer>`` block, or a final-answer cue (``cues``, default ``DEFAULT_CUES``) followed
by an answer; no bare letter, no last number, no answer pulled out of prose.

>>> extract_answer("so x = 2. The answer to this problem is $\\\\frac{3}{4}$.")
'\\\\frac{3}{4}'
>>> extract_answer("<think>maybe \\\\boxed{3}</think> The answer is \\\\boxed{4}")
'4'
>>> extract_answer("\\\\boxed{2} and \\\\boxed{3}")
'2, 3'
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

from mathse_rl.verify.text import UNREADABLE, has_kept_numeral, unify


# Only the tail of a very long output is searched: the answer is at the end, and a
# bound on the scanned length bounds the time of every regex below.
MAX_SCAN_CHARS = 16_000
# Boxes separated by at most this much text on one line are one answer ("\boxed{2} and \boxed{3}").
_BOX_JOIN_GAP = 40
_MAX_SENTENCE = 2000
_MAX_AFTER = 4000  # text after the answer kept for the revision check
_MAX_TAG_ANSWER = 300  # a longer <answer> block is searched like free text  # an answer sentence longer than this is not read further


@dataclass(frozen=True)
class Extraction:
    """The extracted answer (None when there is none), where it came from, and its parts."""

    answer: str | None
    source: str  # "boxed", "phrase", "option", "number", "none"
    parts: tuple[str, ...] = ()
    after: str = ""  # the text written after the answer statement (at most _MAX_AFTER characters)
    at: int = 0  # lenient guesses: where the paragraph the answer was taken from starts


_PLAIN_WORD = re.compile(r"(?<![\\a-zA-Z])[a-zA-Z]+")
_BOX_START = re.compile(r"\\(?:boxed|fbox)\s*(?=\{)|\\boxed\s+(?=[^\s{])")

# Phrases that introduce the final answer, by priority; the last occurrence of the first
# phrase found is used.
_PHRASES = [
    re.compile(r"answer to (?:this|the) (?:problem|question) is\s*[:：]?\s*", re.I),
    re.compile(r"final answer\s*(?:is|[:：])\s*[:：]?\s*", re.I),
    re.compile(r"(?:correct|right) (?:option|choice|answer)(?: letter)? (?:is|should be)\s*[:：]?\s*", re.I),
    re.compile(r"(?:correct|right) (?:options|choices|answers) (?:are|would be)\s*[:：]?\s*", re.I),
    re.compile(r"\banswer (?:is|should be|would be|will be)\s*[:：]?\s*", re.I),
    re.compile(r"\banswer\s*[:：]\s*", re.I),
    re.compile(r"(?:答案|结果)\s*(?:是|为|應為|应为|:|：)\s*[:：]?\s*"),
    re.compile(r"(?:(?:因此|所以|故)?选项(?:为|是)|故选|因此选|所以选|应选|选择)\s*[:：]?\s*"),
    re.compile(r"^#### ?", re.M),
    re.compile(r"\bfinal value (?:is|would be)\s*[:：]?\s*", re.I),  # echoes MathVista's hint "provide the final value"
]
# Final-answer cues for strict extraction (plain phrases, case-insensitive): the default cue set.
DEFAULT_CUES = ("the answer to this problem is", "the answer to the problem is", "the answer to this question is",
                "final answer is", "final answer:", "the answer is", "answer:", "correct option is", "correct option letter is",
                "correct answer is", "correct choice is", "答案是", "答案为", "故选", "####")
# A cue followed by a verb is a broken sentence ("the answer is are 9"), not a stated answer.
_BROKEN_AFTER_CUE = re.compile(r"^\s*(?:is|are|was|were|be|been|equals?|the answer)\b", re.I)
_ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.S | re.I)
# "(C)" names an option; "sin(C)" and "f(B)" do not.
_OPTION = re.compile(r"\b(?:option|choice)\s*\(?([A-J])\)?(?![a-zA-Z])|(?<![A-Za-z])\(([A-J])\)")
# A number in running text, with its exponent or base ("2^{5}", "101_{2}"); never the exponent or index alone.
_NUMBER = re.compile(r"(?<![A-Za-z_0-9.^#])(?<!\^\{)(?<!\^\{-)(?<!_\{)-?(?:[0-9]+(?:[.,][0-9]+)*|\.[0-9]+)(?:/[0-9]+)?"
                     r"(?:\^\{-?[0-9A-Za-z.]+\}|\^-?[0-9]+|_\{[0-9A-Za-z]+\}|_[0-9])?")
# A number that can only be read with a decimal comma: "2,74", "1000,99", "0,111" (never "1,000").
DECIMAL_COMMA = r"-?(?:0|\d+),(?:\d{1,2}|\d{4,})|-?0,\d+"
_ANSWER_WORDS = {"yes", "no", "true", "false"}
# Two options offered together in one sentence: "(B) 13 and (C) 26", "(A) or (D)".
_OPTION_PAIR = re.compile(r"(?<![A-Za-z])\(([A-J])\)[^.\n()]{0,40}?(?:\band\b|\bor\b|&|/)\s*(?:option\s+|choice\s+)?"
                          r"\(([A-J])\)", re.I)
# A response that says it cannot answer: no number in it is its answer, and an answer followed by this
# is not a commitment ("... the answer is (B) No. Without specific data, we cannot determine it").
UNDECIDED = re.compile(
    r"\b(?:cannot|can ?not|can't|could not|couldn't|unable to|impossible to|not possible to|no way to)\s+"
    r"(?:be\s+)?(?:definitively\s+|accurately\s+|exactly\s+|precisely\s+)?(?:determined?|tell|say|know|answer|"
    r"provide|find|calculate|compute|give|identify|infer|judge|conclude|decide|be sure|be certain)\b|"
    r"\b(?:does not|doesn't|do not|don't|did not)\s+(?:provide|give|contain|include|have|show)\s+(?:enough|sufficient|"
    r"the necessary|the required|specific|any|the specific)\s+(?:\w+\s+){0,2}(?:information|data|details|measurements|"
    r"values|context|function|equation|formula)\b|\b(?:not enough|insufficient)\s+(?:information|data|"
    r"details|context)\b|\bwithout\s+(?:the\s+|more\s+|specific\s+|additional\s+|further\s+|exact\s+|any\s+)*"
    r"(?:information|data|details|measurements|values|numbers|function|image|figure|graph|diagram|context)\b|"
    r"\b(?:i am|i'm)\s+not\s+(?:sure|certain)\b|\bnot\s+sure\s+(?:about|whether|if)\b", re.I)
_PROSE_WORD = re.compile(r"(?<![\\a-zA-Z])[a-zA-Z]{3,}")
_IS = re.compile(r"\b(?:is|are|was|equals|would be|will be)\s+(?=\S)", re.I)
_MATH_SEGMENT = re.compile(r"\$\$(.+?)\$\$|\$(.+?)\$|\\\((.+?)\\\)|\\\[(.+?)\\\]", re.S)
_LISTED_OPTION = re.compile(r"^[ \t]*\(?[A-J]\)[ \t]+\S", re.M)  # a line of an option list: "(B) no"
_BARE_LETTER = re.compile(r"^\**\(?([A-J])\)?[.:)]?\**$")
# Lenient, with options: a short response that is one option with its text ("C) Superior lobes", "C. Fish"),
# or a last sentence that ends on an option letter ("Therefore, the exception is E.", "... is C) lizard.").
_LONE_LETTER = re.compile(r"(?<![A-Za-z'’])\(?([A-J])\)?(?![A-Za-z'’])")
# A capital used as a word, not an option: "I pick C", "A good choice is C" (a lowercase word follows).
_WORD_LETTER = re.compile(r"\s+[a-z]")
_OPTION_LINE = re.compile(r"^\(?[A-J][.)]\s+\S.{0,150}$")
_FINAL_LETTER = re.compile(r"\b(?:is|be|choose|select|pick)\s+(?:option\s+)?(?:\(?([A-J])\)(?:\s+[^.\n]{1,60})?|([A-J]))"
                           r"\s*[.!]?\s*$")
_LETTER_LEAD = re.compile(r"^\(?[A-J]\)?(?:[.:)]|\s|$)")


# End-of-sequence and chat-template tokens a model leaves in its output ("3.</s>", "<|im_end|>").
_DEBRIS = re.compile(r"</s>|<s>|<\|(?:im_end|im_start|endoftext|eot_id|end_of_text|end|eos)\|>|<eos>|<pad>|<\|assistant\|>")


def _after_think(response: str) -> str | None:
    response = _DEBRIS.sub("\n", response) if "<" in response else response  # a new turn starts a new line
    end = response.rfind("</think>")
    if end >= 0:
        return response[end + len("</think>"):]
    if "<think>" in response:
        return None  # reasoning never closed: the output was cut before any answer
    return response


def _brace_pairs(text: str) -> dict[int, int]:
    """Index of each unescaped "{" -> index of its matching "}", in one pass (unclosed ones absent)."""
    pairs: dict[int, int] = {}
    stack: list[int] = []
    prev = ""
    for i, c in enumerate(text):
        if prev != "\\":
            if c == "{":
                stack.append(i)
            elif c == "}" and stack:
                pairs[stack.pop()] = i
        prev = c if prev != "\\" else ""
    return pairs


def _boxes(text: str) -> list[tuple[int, int, str]]:
    """Outermost \\boxed{...}/\\fbox{...} spans as (start, end, content); linear in the text."""
    out: list[tuple[int, int, str]] = []
    pairs: dict[int, int] | None = None
    for m in _BOX_START.finditer(text):
        if out and m.start() < out[-1][1]:
            continue  # nested inside the previous box
        if text[m.end():m.end() + 1] == "{":
            if pairs is None:
                pairs = _brace_pairs(text)
            close = pairs.get(m.end())
            if close is None:
                continue
            inner, end = text[m.end() + 1:close], close + 1
        else:
            tail = re.match(r"[^\s$]+", text[m.end():m.end() + 200])
            if tail is None:
                continue
            inner, end = tail.group(0), m.end() + tail.end()
        out.append((m.start(), end, inner.strip()))
    return out


def _last_box_group(text: str) -> tuple[int, list[str]] | None:
    """End of the last group of boxes and their contents, or None when there is no box."""
    boxes = _boxes(text)
    if not boxes:
        return None
    group = [boxes[-1]]
    for box in reversed(boxes[:-1]):
        gap = text[box[1]:group[0][0]]
        words = _PLAIN_WORD.findall(gap)
        joined = re.search(r"[,;]|\b(?:and|or)\b", gap) is not None
        if len(gap) > _BOX_JOIN_GAP or "\n" in gap or (len(words) > 2 and not joined):
            break  # "\boxed{1} no no no no \boxed{2}" is not one answer; "\boxed{1} papers and \boxed{2}" is
        group.insert(0, box)
    parts = [b[2] for b in group if b[2]]
    return (group[-1][1], parts) if parts else None


# Words between a cue and its answer that change nothing: "the answer is therefore B (No)".
_ADVERB = re.compile(r"^(?:therefore|thus|hence|so|clearly|simply|indeed|then|just|now|exactly|definitely|obviously|"
                     r"finally|ultimately|accordingly)\b,?\s*(?=\S)", re.I)
# A count leading its sentence ("2 bars have values larger than 4"): the count is the answer, unless
# the next word makes it part of something else ("2 or 3", "2 more than 4", "5 of the 7").
_LEAD_COUNT = re.compile(r"^\s*(-?[0-9]+(?:\.[0-9]+)?)\s+(?!(?:or|and|to|times|plus|minus|more|less|fewer|greater|"
                         r"smaller|larger|over|out|of|divided|multiplied|by|from|through|thru|x|percent|per|and/or)\b)"
                         r"[A-Za-z]")
_SECOND_NUMBER = re.compile(r"\b(?:or|and|either|to)\s+(?:\$\s*)?-?[0-9]")
# After a leading count, another number may only state a condition: "larger than 4", "of $931,441".
_OTHER_NUMBER = re.compile(r"(?<![0-9.,])(?<!\$)(?<!\$ )-?[0-9]")
_CONDITION_WORDS = re.compile(r"\b(?:than|of|in|from|over|under|at|per|by|with|within|above|below|after|before)\s+(?:\$\s*)?$",
                              re.I)


def sentence_answer(text: str, strict: bool = False) -> str:
    """The answer written after a phrase: up to the end of its sentence or line.

    ``strict``: a broken sentence gives no answer, and no number is picked out of prose."""
    text = text.lstrip().lstrip("*_").lstrip()  # markdown emphasis: "**Answer:** 12"
    text = _ADVERB.sub("", text, 1).lstrip("*_").lstrip()
    line = text[:_MAX_SENTENCE].split("\n", 1)[0]
    if strict and _BROKEN_AFTER_CUE.match(line):
        return ""
    joined = _joined_math(re.split(r"(?<!\d)\.(?:\s|$)|。", line, 1)[0])
    if joined is not None:
        return joined
    seg = _MATH_SEGMENT.match(line)
    if seg:
        return next(g for g in seg.groups() if g is not None).strip()
    if _LETTER_LEAD.match(line):
        # "C. 14" / "(A) 45°": the option letter leads; keep the option text with it.
        return re.split(r"(?<=\S)[.。]\s*$", line.strip())[0].strip().replace("$", "")
    cut = re.search(r"(?<!\d)\.(?:\s|$)|\.(?=\s+[A-Z])|。|[!?](?:\s|$)|,\s+(?:so|which|because|since|and|as)\b|\s+(?:because|since|which)\b", line)
    piece = line[: cut.start()] if cut else line
    is_ = None
    for is_ in _IS.finditer(piece[:300]):
        pass
    if is_ is not None:
        piece = piece[is_.end():]  # "The largest $n$ is 34" -> "34"
    inner = _MATH_SEGMENT.search(piece)
    if inner:
        return next(g for g in inner.groups() if g is not None).strip()
    piece = piece.strip().rstrip(".*_").strip()
    if is_prose(piece):
        lead = _LEAD_COUNT.match(piece)
        if lead and not _SECOND_NUMBER.search(piece) and _only_conditions_after(piece, lead.end(1)):
            return lead.group(1)  # "2 bars have values larger than 4" -> "2"
        if not strict and not _SECOND_NUMBER.search(piece) and not _LEAD_NUMBER.match(piece):
            nums = _NUMBER.findall(piece)
            if nums:
                return nums[-1]  # "Jane started growing 3 hours ago" -> "3"
    return piece


_LEAD_NUMBER = re.compile(r"^\s*-?[0-9]")


def _only_conditions_after(piece: str, start: int) -> bool:
    """Whether every number after ``start`` states a condition ("than 4"), none another answer ("; 4 if ...")."""
    for m in _OTHER_NUMBER.finditer(piece, start):
        if not _CONDITION_WORDS.search(piece, max(start, m.start() - 30), m.start()):
            return False
    return True


_JOINER = re.compile(r"^[\s\\\"'“”]*(?:,|;|and|or|\\quad)?[\s\\\"'“”]*$", re.I)


def _joined_math(piece: str) -> str | None:
    """Several math spans joined only by "and"/"or"/commas ("$12$ and $13$"): one answer, "12, 13"."""
    segs = list(_MATH_SEGMENT.finditer(piece))
    if len(segs) < 2:
        return None
    if any(not _JOINER.match(piece[a.end():b.start()]) for a, b in zip(segs, segs[1:])):
        return None
    if not _JOINER.match(piece[:segs[0].start()]) or not _JOINER.match(piece[segs[-1].end():].rstrip(".")):
        return None
    return ", ".join(next(g for g in m.groups() if g is not None).strip() for m in segs)


def has_box(text: str) -> bool:
    """Whether ``text`` holds a ``\\boxed``/``\\fbox`` answer."""
    return _BOX_START.search(text) is not None


def is_prose(s: str) -> bool:
    """Two or more plain words outside LaTeX commands and \\text{...} (units stay units)."""
    plain = re.sub(r"\\(?:text|mathrm|textnormal|textbf|mbox)\s*\{[^{}]*\}|\\[a-zA-Z]+", " ", s)
    return len(_PROSE_WORD.findall(plain)) >= 2


def _bare_answer(text: str) -> str | None:
    """A response that is only an answer ("$E$", "\\frac{10}{9}", "1 000"): all of it, delimiters off."""
    t = text.strip()
    if not t or len(t) > 120 or "\n" in t:
        return None
    seg = _MATH_SEGMENT.fullmatch(t.rstrip("."))
    if seg:
        return next(g for g in seg.groups() if g is not None).strip()
    words = re.findall(r"[a-zA-Z]{2,}", re.sub(r"\\[a-zA-Z]+", " ", t))
    if "$" in t or any(w.lower() not in _ANSWER_WORDS for w in words):
        return None
    return t.rstrip(".").strip()


def _cue_patterns(cues: Sequence[str]) -> tuple[re.Pattern, ...]:
    """Plain cue phrases as patterns: case-insensitive, any run of spaces, an optional colon after."""
    out = []
    for cue in cues:
        words = [re.escape(w) for w in str(cue).strip().split()]
        if words:
            out.append(re.compile(r"\s+".join(words) + r"\s*[:：]?\s*", re.I))
    return tuple(out)


_DEFAULT_CUE_PATTERNS = _cue_patterns(DEFAULT_CUES)


def _from_phrases(text: str, phrases: Sequence[re.Pattern] = (), strict: bool = False) -> Extraction | None:
    for rx in phrases or _PHRASES:
        last = None
        for last in rx.finditer(text):
            pass
        if last is not None:
            rest = text[last.end():]
            ans = sentence_answer(rest, strict)
            if ans:
                at = rest.find(ans)
                after = rest[at + len(ans):] if at >= 0 else rest.split("\n", 1)[1] if "\n" in rest else ""
                return Extraction(ans, "phrase", (ans,), after[:_MAX_AFTER])
    return None


def trim(response: str) -> str:
    """The part of a response extraction looks at (equivalent for ``extract``): what follows
    the last ``</think>``, at most ``MAX_SCAN_CHARS`` from the end. Used to ship less to workers."""
    if not response:
        return ""
    text = _after_think(response)
    if text is None:
        return "<think>"
    return text[-MAX_SCAN_CHARS:]


def extract(response: str, choices: Sequence[str] | None = None, strict: bool = False,
            cues: Sequence[str] | None = None) -> Extraction:
    """The answer in ``response`` with the rule that found it; see the module docstring.

    ``strict``: only a stated answer counts (box, ``<answer>`` block, a cue from ``cues``);
    ``cues``: the final-answer phrases strict mode accepts (None: ``DEFAULT_CUES``)."""
    phrases: Sequence[re.Pattern] = ()
    if strict:
        phrases = _DEFAULT_CUE_PATTERNS if cues is None else _cue_patterns(cues)
        if not phrases:
            phrases = (re.compile(r"(?!)"),)  # no cue at all: only boxes and answer blocks count
    if not response:
        return Extraction(None, "none")
    text = _after_think(response)
    if text is None:
        return Extraction(None, "none")
    if len(text) > MAX_SCAN_CHARS:
        text = text[-MAX_SCAN_CHARS:]
    text = unify(text)  # what a reader sees: invisible characters out, exponents as exponents
    if UNREADABLE in text:
        return Extraction(None, "none")  # a direction control reorders what is shown: nothing here can be read
    boxes = _last_box_group(text)
    if boxes:
        end, parts = boxes
        # A final-answer sentence written after the last box overrides it ("...\boxed{255} ...
        # Final Answer: The final answer is $10,455$").
        later = _from_phrases(text[end:], _PHRASES[:2], strict)
        if later is not None:
            return later
        return Extraction(", ".join(parts) if len(parts) > 1 else parts[0], "boxed", tuple(parts),
                          text[end:end + _MAX_AFTER])
    tag = None
    for tag in _ANSWER_TAG.finditer(text):
        pass
    if tag is not None:
        inner = tag.group(1).strip()
        found = _from_phrases(inner, phrases, strict)
        if found is not None:
            return found
        if inner and len(inner) <= _MAX_TAG_ANSWER:
            inner = sentence_answer(inner, strict) if "$" in inner or "\\(" in inner else inner.rstrip(".")
            return Extraction(inner, "tag", (inner,)) if inner else Extraction(None, "none")
        text = inner or text
    found = _from_phrases(text, phrases, strict)
    if found is not None:
        return found
    if strict:
        return Extraction(None, "none")  # nothing stated: no guessing from the rest of the text
    found = _guess(text, choices)
    if found.answer is not None and UNDECIDED.search(text, found.at):
        return Extraction(None, "none")  # "not enough information to determine f(0)": no number to guess
    return found


_BLANK_LINE = re.compile(r"\n[ \t]*\n")


def _last_paragraph_start(text: str) -> int:
    """Where the last two paragraphs begin (blank lines separate paragraphs)."""
    ends = [m.end() for m in _BLANK_LINE.finditer(text.rstrip())]
    return ends[-2] if len(ends) >= 2 else 0


def _sentence_start(text: str, at: int) -> int:
    """Where the paragraph holding ``at`` starts: a refusal anywhere in it ("I cannot tell. It may be 4.")
    takes the guess back."""
    m = None
    for m in _BLANK_LINE.finditer(text, max(0, at - 2000), at):
        pass
    return m.end() if m is not None else max(0, at - 2000)


def _guess(text: str, choices: Sequence[str] | None) -> Extraction:
    """Lenient mode only: an answer the response does not state (a bare letter, an option named in
    the last paragraphs, the whole response, the last number); ``at`` is where its paragraph starts."""
    tail_line = text.rstrip().rsplit("\n", 1)[-1].strip()
    bare = _BARE_LETTER.match(tail_line)
    if bare:
        return Extraction(bare.group(1), "option", (bare.group(1),), at=len(text) - len(tail_line))
    if choices:
        lead = _OPTION_LINE.match(text.strip()) if "\n" not in text.strip() else None
        final = _FINAL_LETTER.search(tail_line)
        if lead is not None or final is not None:  # "C) 5√3 m", "C. Fish", "... the exception is E."
            ans = (lead.group(0) if lead is not None else final.group(1) or final.group(2)).strip().rstrip(".")
            last_sentence = re.split(r"(?<=[.!?])\s+", tail_line)[-1]
            letters = {m.group(1) for m in _LONE_LETTER.finditer(last_sentence)
                       if ord(m.group(1)) - 65 < len(choices)
                       and (m.group(0).endswith(")") or not _WORD_LETTER.match(last_sentence, m.end()))}
            if len(letters) >= 2:  # "It might be C, or it is D.": two options in the sentence that names one
                ans = " ".join(sorted(letters))
            return Extraction(ans, "option", (ans,), at=_sentence_start(text, len(text) - len(tail_line)))
        last = None
        listing = len(_LISTED_OPTION.findall(text)) >= 2
        paragraph = _last_paragraph_start(text)  # "one side (C)" early in a long answer names no option
        for m in _OPTION.finditer(text, paragraph):
            if listing and _LISTED_OPTION.match(text, text.rfind("\n", 0, m.start()) + 1) is not None \
                    and not text[text.rfind("\n", 0, m.start()) + 1:m.start()].strip():
                continue  # "(B) no" in an echoed list of options is not a choice
            last = m
        if last is not None:
            letter = last.group(1) or last.group(2)
            line_start = text.rfind("\n", 0, last.start()) + 1
            line_end = text.find("\n", last.end())
            pair = _OPTION_PAIR.search(text, line_start, line_end if line_end >= 0 else len(text))
            at = _sentence_start(text, last.start())
            if pair is not None and pair.group(1) != pair.group(2):
                both = f"{pair.group(1)} {pair.group(2)}"  # "(B) 13 and (C) 26": two options, a hedge
                return Extraction(both, "option", (both,), at=at)
            return Extraction(letter, "option", (letter,), at=at)
    bare_answer = _bare_answer(text)
    if bare_answer is not None:
        return Extraction(bare_answer, "whole", (bare_answer,))
    window = text[-2000:]
    last = _last_answer_number(window)
    if last is not None:
        # A number inside a final math span ("The point is $(-1, 3)$.") takes the whole span.
        seg = None
        for seg in _MATH_SEGMENT.finditer(window):
            pass
        at = len(text) - len(window) + _sentence_start(window, last.start())
        if seg is not None and seg.start() <= last.start() < seg.end():
            inner = next(g for g in seg.groups() if g is not None).strip()
            return Extraction(inner, "math", (inner,), at=at)
        num = last.group(0)
        bound = _BOUND_BEFORE.search(window, max(0, last.start() - 40), last.start())
        if bound is not None:  # "so we get ≤ 3": a bound, not a value
            num = window[bound.start():last.end()]
            return Extraction(num, "number", (num,), at=at)
        ratio = _RATIO_BEFORE.search(window, max(0, last.start() - 40), last.start())
        if ratio is not None:  # "is 3:1": the ratio, never its last part
            num = window[ratio.start():last.end()]
            return Extraction(num, "number", (num,), at=at)
        run = _NUMBER_RUN.search(window, max(0, last.start() - 200), last.start())
        if run is not None:  # "so we get 1 2": two numbers side by side, never the last one alone
            num = window[run.start():last.end()]
            return Extraction(num, "number", (num,), at=at)
        near = window[max(0, last.start() - 1):last.end() + 1]
        if has_kept_numeral(near):  # "1①": one token a reader does not see as the number 1
            token = re.search(r"\S*$", window[:last.start()]).group(0) + re.match(r"\S*", window[last.start():]).group(0)
            return Extraction(token, "number", (token,), at=at)
        if re.fullmatch(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?|" + DECIMAL_COMMA, num) is None and "," in num:
            num = num.rsplit(",", 1)[-1]
        return Extraction(num, "number", (num,), at=at)
    word = _final_number_word(window)
    if word is not None:
        return Extraction(word, "number", (word,), at=len(text) - len(window) + _sentence_start(window, len(window)))
    return Extraction(None, "none")


# A number right after one of these is a condition, not the answer: "at least 0 ties", "in 4 weeks".
_CONDITION_BEFORE = re.compile(r"\b(?:at least|at most|more than|less than|fewer than|lower than|higher than|greater than|"
                               r"than|in|for|after|within|per|from|with|over|under|every|each|above|below)\s+$", re.I)
_SENTENCE_END = re.compile(r"[.!?](?:\s|$)|\n")
_NUMBER_WORD = re.compile(r"\b(?:is|are|was|were|be|total of|there are|there is)\s+(?:only\s+|exactly\s+|just\s+)?"
                          r"(zero|one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve)\b(?![-\w])", re.I)
_WORD_VALUES = {w: str(i) for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve".split())}


_BOUND_BEFORE = re.compile(r"(?:[<>≤≥≦≧≨≩≪≫⩽⩾≲≳≺≻≠≮≯≰≱＜＞﹤﹥]=?|\\(?:le|ge|leq|geq|lt|gt|ne|neq|ll|gg|leqslant|geqslant|"
                           r"prec|succ|lesssim|gtrsim|nless|ngtr|nleq|ngeq)(?![a-zA-Z]))\s*\$?\s*$")
_RATIO_BEFORE = re.compile(r"(?<![A-Za-z_0-9.])[0-9]+(?:\.[0-9]+)?\s*:\s*$")
_NUMBER_RUN = re.compile(r"(?<![A-Za-z_0-9.^{])(?:-?[0-9][0-9.,]*[ \t]+)+$")


def _last_answer_number(window: str) -> re.Match | None:
    """The last number of the final sentence that holds one, skipping numbers that state a
    condition ("there are 25 racks that have at least 0 ties" -> 25)."""
    numbers = list(_NUMBER.finditer(window))
    if not numbers:
        return None
    last = numbers[-1]
    start = 0
    for end in _SENTENCE_END.finditer(window, 0, last.start()):
        start = end.end()
    in_sentence = [m for m in numbers if m.start() >= start]
    for m in reversed(in_sentence):
        if not _CONDITION_BEFORE.search(window[max(start, m.start() - 24):m.start()]):
            return m
    return last


def _final_number_word(window: str) -> str | None:
    """A number written as a word in the last sentence ("there are a total of four objects left")."""
    tail = window.rstrip()
    start = 0
    for end in _SENTENCE_END.finditer(tail, 0, max(0, len(tail) - 1)):
        start = end.end()
    m = None
    for m in _NUMBER_WORD.finditer(tail[start:]):
        pass
    return _WORD_VALUES[m.group(1).lower()] if m else None


def extract_answer(response: str, choices: Sequence[str] | None = None, strict: bool = False,
                   cues: Sequence[str] | None = None) -> str | None:
    """The final answer string in a response, or None. Cheap: no SymPy, bounded scan.

    ``strict``/``cues``: see ``extract`` (only a stated final answer counts).

    >>> extract_answer("Answer: (B)", choices=["1", "2"])
    '(B)'
    >>> extract_answer("no digits here") is None
    True
    """
    return extract(response, choices, strict, cues).answer
