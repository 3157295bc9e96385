"""Hand-built wrong answers that must never be accepted: hedges, false equations, unit
mismatches, self-corrections, runaway outputs and tolerance edges (at least 200 in all).

Each case is (response, gold, choices). Every one is judged in lenient and strict mode.
"""

from __future__ import annotations

import pytest

from mathse_rl.verify import verify

C4 = ["10", "12", "14", "16"]

# ---------------------------------------------------------------- hedges across options
_HEDGE_FORMS = ["The answer is {a} {b}", "The answer is ({a}) ({b})", "The answer is ({a})({b})",
                "The answer is {a} & {b}", "The answer is {a} (or {b})", "The answer is {a}. {b}",
                "The answer is {a} or {b}", "The answer is {a}, {b}", "The answer is {a}/{b}",
                "The answer is {a} and {b}", "\\boxed{{{a}, {b}}}", "\\boxed{{{a}}} or \\boxed{{{b}}}",
                "The answer is either {a} or {b}", "Answer: {a};{b}", "The correct options are {a} and {b}.",
                "Final answer: ({a}) or ({b})"]
HEDGES = []
for gold, other in (("A", "B"), ("C", "D"), ("B", "A")):
    for form in _HEDGE_FORMS:
        HEDGES.append((form.format(a=gold, b=other), gold, None))
        HEDGES.append((form.format(a=gold, b=other), gold, C4))
HEDGES += [("The answer is A B C D", "A", None), ("The answer is A B C D", "A", C4),
           ("The answer is (A) (B) (C) (D)", "D", C4), ("\\boxed{ABCD}", "A", C4)]

# ---------------------------------------------------------------- false equations
FALSE_EQUATIONS = [
    ("\\boxed{2+2=5}", "5", None), ("\\boxed{1=2}", "2", None), ("\\boxed{3+4=8}", "8", None),
    ("\\boxed{2\\times 3 = 7}", "7", None), ("The answer is $10 - 3 = 8$.", "8", None),
    ("\\boxed{\\frac{1}{2} = 0.6}", "0.6", None), ("\\boxed{5 = 6}", "6", None), ("\\boxed{5 = 6}", "5", None),
    ("\\boxed{2^3 = 9}", "9", None), ("\\boxed{\\sqrt{16} = 5}", "5", None), ("\\boxed{7 \\cdot 8 = 54}", "54", None),
    ("\\boxed{12 / 4 = 4}", "4", None), ("\\boxed{100 - 1 = 98}", "98", None), ("\\boxed{3 = 3 = 4}", "4", None),
    ("The final answer is $6 + 6 = 13$.", "13", None), ("\\boxed{0.5 + 0.5 = 2}", "2", None),
    ("\\boxed{x^2 = 4}", "4", None), ("\\boxed{2x = 6}", "6", None), ("\\boxed{2x = 6}", "2", None),
    ("\\boxed{x + 1 = 5}", "5", None),
]

# ---------------------------------------------------------------- unit mismatches
_UNIT_PAIRS = [("kg", "m"), ("cm", "m"), ("s", "m"), ("m^2", "m"), ("km", "m"), ("\\text{ hours}", "\\text{ minutes}"),
               ("\\text{ liters}", "\\text{ ml}"), ("cm^2", "cm^3"), ("\\text{ g}", "\\text{ kg}"), ("mm", "cm"),
               ("\\text{ feet}", "\\text{ inches}"), ("\\text{ days}", "\\text{ weeks}")]
UNITS = []
for value in ("5", "12", "0.5"):
    for pu, gu in _UNIT_PAIRS:
        UNITS.append((f"\\boxed{{{value} {pu}}}", f"{value} {gu}", None))

# ---------------------------------------------------------------- answers the response takes back
_REVISIONS = ["The answer is {w}. Wait, no, it is {r}.", "\\boxed{{{w}}}\n\nActually the answer is {r}.",
              "The answer to this problem is {w}. Hmm, wait: I made a mistake, it should be {r}.",
              "\\boxed{{{w}}} Oops, correction: \\boxed{{{w}}} is wrong; the total is {r}.",
              "Final answer: {w}. Let me recheck... the answer is {r}.",
              "The answer is {w}. No, it is {r}.", "So the answer is {w}, actually {r}.",
              "The answer is {w}. On second thought, it is {r}."]
REVISIONS = []
for w, r in (("3", "4"), ("12", "15"), ("\\frac{1}{2}", "\\frac{1}{3}"), ("B", "C")):
    for form in _REVISIONS:
        REVISIONS.append((form.format(w=w, r=r), w, C4 if w == "B" else None))

# ---------------------------------------------------------------- output that runs on into another prompt
RUNAWAY = [
    ("The answer is D.\n\nQuestion: A pool is 16 m by 8 m. How far is it around?\nTherefore, the distance is 48 meters.",
     "D", C4),
    ("The answer is 12.\n\nQuestion: What is 2+2?\nAnswer: 4", "12", None),
    ("\\boxed{7}\n\nProblem 2: find y.\nSo y is 9.", "7", None),
    ("The answer is (C).\nHint: answer with a letter.\nQuestion: Is it red?\nChoices:\n(A) yes\n(B) no", "C", C4),
]

# ---------------------------------------------------------------- tolerance edges
TOLERANCE = [
    ("\\boxed{x+10^{-8}}", "x", None), ("\\boxed{e^{-30}}", "0", None), ("\\boxed{3141592652000}", "\\pi\\times10^{12}", None),
    ("\\boxed{\\frac{13013}{4000}}", "3.25", None), ("\\boxed{3.253}", "3.25", None), ("\\boxed{3.25}", "3.253", None),
    ("\\boxed{1.0000001}", "1", None), ("\\boxed{1000001}", "1000000", None), ("\\boxed{0.1+10^{-12}}", "0.1", None),
    ("\\boxed{\\frac{1}{3}+10^{-10}}", "\\frac{1}{3}", None), ("\\boxed{2\\pi + 10^{-9}}", "2\\pi", None),
    ("\\boxed{10^{-20}}", "0", None), ("\\boxed{1-10^{-9}}", "1", None), ("\\boxed{\\sqrt{2}+10^{-10}}", "\\sqrt{2}", None),
    ("\\boxed{0.3}", "\\frac{1}{3}", None), ("\\boxed{0.34}", "\\frac{1}{3}", None), ("\\boxed{3.15}", "\\pi", None),
    ("\\boxed{1.4142}", "1.41421", None), ("\\boxed{2.5}", "\\frac{5}{2}+10^{-6}", None),
    ("\\boxed{x^2+10^{-7}x}", "x^2", None), ("\\boxed{(1+10^{-9})x}", "x", None), ("\\boxed{1.41}", "1.414", None),
    ("\\boxed{0.66}", "\\frac{2}{3}", None), ("\\boxed{0.6666}", "\\frac{2}{3}", None), ("\\boxed{6.28}", "6.3", None),
    ("\\boxed{2}", "2.0001", None), ("\\boxed{123456789}", "123456788", None), ("\\boxed{10^{15}+1}", "10^{15}", None),
]

CASES = HEDGES + FALSE_EQUATIONS + UNITS + REVISIONS + RUNAWAY + TOLERANCE


def test_there_are_at_least_200_wrong_answers():
    assert len(CASES) >= 200, len(CASES)


@pytest.mark.parametrize("response, gold, choices", CASES)
@pytest.mark.parametrize("strict", [False, True], ids=["lenient", "strict"])
def test_wrong_answer_is_never_accepted(response, gold, choices, strict, warm_pool):
    v = verify(response, gold, choices=choices, timeout=5.0, strict=strict)
    assert not v.correct, (response, gold, choices, v)


# Their correct twins stay accepted: the refusals above are not blanket ones.
@pytest.mark.parametrize("response, gold, choices", [
    ("\\boxed{3+4=7}", "7", None), ("\\boxed{x = 5}", "5", None), ("\\boxed{5\\text{ m}}", "500 cm", None),
    ("The answer is 4. I hope it is correct.", "4", None), ("\\boxed{0.33}", "\\frac{1}{3}", None),
    ("\\boxed{3.14}", "\\pi", None), ("\\boxed{2\\pi}", "6.28", None), ("\\boxed{\\frac{13}{4}}", "3.25", None),
    ("The answer is (A).", "A", C4), ("\\boxed{1-10^{-9}}", "0.999999999", None),
    ("The answer is D. Therefore, the perimeter is 16.", "D", C4),
])
def test_correct_twins_are_accepted(response, gold, choices, warm_pool):
    assert verify(response, gold, choices=choices, timeout=5.0).correct
