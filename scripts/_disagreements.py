"""Why a release's label and ours differ on a row: the decomposition of docs/eval_reproduction.md.

Each row where the two verdicts differ falls in one class, tested in this order:

- ``rule``: our verdict is not what the release's own rule gives for our reading (a difference of rule);
- ``label`` (MathVista): the release's label is not what its own rule gives for its own recorded extraction
  (extraction ``18.0`` for the integer answer 18 labelled wrong): the label does not follow from the file;
- ``empty``: the response is empty (MathVista): the release's label rests on no text at all;
- ``listing``: the response only continues the list of options ("(C) Yes\\n(D) No"): it chooses none, the
  release's extractor picked one;
- ``program``: a program-of-thought row whose recorded extraction is not what the program printed;
- ``no_answer``: neither side read an answer: we pass the release's rule the empty extraction, its
  extractor wrote a no-answer text ("N/A", a copied refusal) which the rule maps to some option;
- ``runaway``: the response runs on into questions it made up and answers them; the release's extraction
  occurs only in that run-on, i.e. it is the answer to another question;
- ``not_in_response``: the release's extraction does not occur in the response (an answer the
  response does not contain, or a misreading of the one it states: MATH-Vision's own rule glues an
  option letter to its markup, "\\textbf{(A)}" read as "bfa");
- ``compare`` (MATH-Vision): the release read what we read, and its string comparison with the option's
  value as written ("120°" against "$120^{\\circ}$") failed where the values agree;
- ``reading``: both readings are in the response and differ: one side misread it (read by hand).

    >>> release_prediction("D", ["yes", "no"], "multi_choice", "text", None)
    'no'
    >>> mentions("B", "The correct answer is (B) 8/11.", ["3/11", "8/11"]), mentions("0.8", "75%", None)
    (True, False)
"""

from __future__ import annotations

import re
from typing import Sequence

from mathse_rl.eval.scoring import nearest_option, plain_number, release_form

CLASSES = ("rule", "label", "empty", "listing", "program", "no_answer", "runaway", "not_in_response", "compare", "reading")
# The classes whose published label does not come from a right reading of the response.
RELEASE_SIDE = ("label", "empty", "listing", "program", "no_answer", "runaway", "not_in_response", "compare")
_LIST_LINE = re.compile(r"^\s*\(?[A-Z]{1,2}\)\s*\S")
# Where a response runs on into a prompt it wrote itself ("Question: How many edges does a cube have?").
RUN_ON = re.compile(r"^\s*(?:question|problem|human|user|q)\s*\d*\s*[:：]", re.I | re.M)
# The texts MathVista's extractor writes when the response states no answer.
NO_ANSWER = re.compile(
    r"^\W*(?:n/?a|none|null|nil|no answer|no extracted|not (?:provided|given|determinable|applicable|available|"
    r"specified|possible|enough|clear)|cannot|can't|unable|unknown|undetermined|insufficient|there is no|"
    r"there are no|no (?:option|valid|specific|correct|definitive|information|data)|please provide|"
    r"the (?:question|text|image|problem|information|model|response|solution|data|table|diagram)\b.*\b(?:not|no|cannot)\b|"
    r"none of the|无|無)", re.I | re.S)
_NUMBER = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?|(?<![\w.])-?\.\d+")
_WORDS = {w: i for i, w in enumerate("zero one two three four five six seven eight nine ten eleven twelve".split())}


def release_prediction(extraction: str | None, choices: Sequence[str] | None, question_type: str,
                       answer_type: str, precision) -> str | None:
    """MathVista's normalisation of an extraction (``calculate_score.py``): an option's text; an
    integer as ``str(int(float(x)))``; a float as ``str(round(float(x), precision))``; a list as written."""
    text = "" if extraction is None else str(extraction)
    if question_type == "multi_choice":
        return list(choices)[nearest_option(text.strip(), list(choices))]
    try:
        if answer_type == "integer":
            return str(int(float(text)))
        if answer_type == "float":
            return str(round(float(text), int(precision)))
    except (ValueError, OverflowError, TypeError):
        return None
    return text if answer_type == "list" else None


def our_reading(extraction: str | None, choices, question_type: str) -> str:
    """Our reading in the form the release's rule takes (what ``mathvista.score`` hands it)."""
    if question_type == "multi_choice":
        return release_form(extraction)
    n = plain_number(extraction)
    return "" if extraction is None else (repr(n) if n is not None else str(extraction))


def _key(s: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"[*_`$\\]", "", s)).strip(" .,;:!\"'").lower()


def _numbers(text: str) -> list[float]:
    text = text.replace(",", "")
    found = [float(m.group(0)) for m in _NUMBER.finditer(text)]
    found += [float(v) for w, v in _WORDS.items() if re.search(rf"\b{w}\b", text, re.I)]
    return found


def _stem(word: str) -> str:
    return word[:-1] if len(word) > 3 and word.endswith("s") else word


def _option_in(option: str, response: str) -> bool:
    """Whether an option's text is in the response: as written (braces, spaces and case aside), or most of its
    words ("the adult spider population would decrease" names "Adults spider population would decrease")."""
    squash = lambda t: re.sub(r"[\s{}$*_]", "", t).lower()  # noqa: E731
    if squash(option) and squash(option) in squash(response):
        return True
    words = {_stem(w) for w in re.findall(r"[a-z]{3,}", option.lower())}
    said = {_stem(w) for w in re.findall(r"[a-z]{3,}", response.lower())}
    return bool(words) and len(words & said) >= 0.6 * len(words)


def mentions(extraction: str, response: str, choices: Sequence[str] | None) -> bool:
    """Whether ``extraction`` occurs in ``response``: an option letter as an option mark (or the option's
    own text, or most of its words), a number among its numbers, anything else as a run of its words."""
    e = str(extraction).strip()
    if not e:
        return False
    letter = re.fullmatch(r"\(?([A-Z])\)?(?:[.:)]?\s+.*)?", e, re.S)
    if choices and letter:
        x = letter.group(1)
        if re.search(rf"(?<![A-Za-z])\({x}\)|(?<![A-Za-z(]){x}\)|\b(?:option|choice|letter|answer is|answer:)\s*\(?{x}\b|"
                     rf"^\W*{x}(?:[.:,]|\s*$)|\b(?:is|be)\s+\(?{x}\b", response, re.I | re.M if x != "A" else re.M):
            return True
        i = ord(x) - ord("A")
        return 0 <= i < len(choices) and _option_in(choices[i], response)
    if choices:
        named = [c for c in choices if _key(c) == _key(e)]
        if named:
            return _option_in(named[0], response)
    if not choices:
        wanted = [plain_number(t) for t in re.split(r"[,\[\]]", e) if t.strip()]
        if wanted and all(w is not None for w in wanted):
            have = _numbers(response)
            return all(any(abs(h - w) <= 1e-9 * max(1.0, abs(w)) for h in have) for w in wanted)
    return _key(e) in _key(response)


def classify(release_extraction: str | None, release_correct: bool, ours_correct: bool, our_extraction: str | None,
             response: str, choices, rule_on_ours: bool, program_output: str | None = None,
             release_rule=None, gold: str | None = None) -> str:
    """The class of one disagreeing row (see the module docstring).

    >>> rule = lambda e: release_prediction(e, None, "free_form", "integer", None)
    >>> classify("18.0", False, True, "18.0", "18.0", None, True, release_rule=rule, gold="18")
    'label'
    """
    if rule_on_ours != ours_correct:
        return "rule"
    if release_rule is not None and gold is not None and (release_rule(release_extraction) == gold) != release_correct:
        return "label"
    if not (response or "").strip():
        return "empty"
    lines = [line for line in response.splitlines() if line.strip()]
    if len(lines) >= 2 and all(_LIST_LINE.match(line) for line in lines):
        return "listing"
    if program_output is not None and release_rule is not None:
        if release_rule(release_extraction) != release_rule(program_output):
            return "program"
    if not our_extraction and NO_ANSWER.match(str(release_extraction or "")) is not None:
        return "no_answer"
    extraction = str(release_extraction or "")
    run_on = RUN_ON.search(response)
    if run_on is not None and run_on.start() > 0 and not mentions(extraction, response[:run_on.start()], choices) \
            and mentions(extraction, response[run_on.start():], choices):
        return "runaway"
    yes_no = bool(choices) and sorted(str(c).strip().lower() for c in choices) == ["no", "yes"]
    # a yes/no extraction may come from a reply that answers without either word ("X is not Y" says no); any
    # other extraction (a number, a sentence) for a yes/no question must be in the reply like any other
    said_yes_no = yes_no and re.fullmatch(r"\W*(?:\(?[ab]\)?\W*)?(?:yes|no)?\W*", extraction.lower()) is not None
    if not said_yes_no and not mentions(extraction, response, choices):
        return "not_in_response"  # (a yes/no reply may answer without either word: "X is not Y" says no)
    return "reading"
