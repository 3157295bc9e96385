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


# ================================================================ look-alike digits and separators
# Generated families: every variant is judged lenient and strict and must be refused. The reader's
# reading (2⁵ is 32, 101₂ is a base-2 numeral, ①② are two labels, "3 4" is two numbers) never
# matches these golds; each family's correct twin is in test_forms.py.

_SUP = str.maketrans("0123456789-+()n", "⁰¹²³⁴⁵⁶⁷⁸⁹⁻⁺⁽⁾ⁿ")
_SUB = str.maketrans("0123456789", "₀₁₂₃₄₅₆₇₈₉")
# Where a final answer is written: the same value reaches the verifier through each of these.
_SPOTS = ["The answer to this problem is {v}.", "\\boxed{{{v}}}", "The final answer is ${v}$.", "Answer: {v}",
          "So the answer is {v}", "<answer>{v}</answer>", "Thus we get {v}."]


def _spots(value: str, golds, choices=None) -> list:
    return [(spot.format(v=value), g, choices) for spot in _SPOTS for g in golds]


def _superscripts() -> list:
    out = []
    for base in (2, 3, 5, 7, 10, 12):
        for exp in (2, 3, 4, 5, 6, 9, 10, 12):
            sup = str(exp).translate(_SUP)
            wrong = {f"{base}{exp}", str(base * exp), str(base), str(exp), str(base + exp)} - {str(base ** exp)}
            out += _spots(f"{base}{sup}", sorted(wrong))
    for var in ("x", "a", "n"):
        for exp in (2, 3, 5, 10):
            sup = str(exp).translate(_SUP)
            out += _spots(f"{var}{sup}", [f"{exp}{var}", f"{var}{exp}", f"{var} + {exp}"])
    out += _spots("10⁻²", ["8", "-20", "102", "10-2"]) + _spots("2⁻¹", ["1", "-2", "21"])
    out += _spots("(x+1)²", ["2(x+1)", "2x+2"]) + _spots("2⁽³⁾", ["6", "23"]) + _spots("3ⁿ", ["3n"])
    return out


def _subscripts() -> list:
    out = []
    for digits, base in (("101", 2), ("1011", 2), ("12", 3), ("77", 8), ("10", 10), ("21", 5), ("1", 2)):
        sub = str(base).translate(_SUB)
        wrong = {f"{digits}{base}", str(int(digits) * base), digits, str(int(digits) + base)}
        out += _spots(f"{digits}{sub}", sorted(wrong))
    for var in ("x", "a"):
        for k in (1, 2, 3):
            out += _spots(f"{var}{str(k).translate(_SUB)}", [f"{k}{var}", f"{var}{k}"])
    return out


# Characters Unicode gives a digit value that are not the digits of a number.
_ENCLOSED = {
    "circled": lambda n: chr(0x2460 + n - 1), "parenthesized": lambda n: chr(0x2474 + n - 1),
    "full stop": lambda n: chr(0x2488 + n - 1), "negative circled": lambda n: chr(0x2776 + n - 1) if n <= 10 else chr(0x24EB + n - 11),
    "sans-serif circled": lambda n: chr(0x2780 + n - 1) if n <= 10 else None,
    "double circled": lambda n: chr(0x24F5 + n - 1) if n <= 10 else None,
    "roman": lambda n: chr(0x2160 + n - 1) if n <= 12 else None, "small roman": lambda n: chr(0x2170 + n - 1) if n <= 12 else None,
}


def _enclosed() -> list:
    out = []
    for name, make in _ENCLOSED.items():
        for a, b in ((1, 2), (3, 4), (7, 5), (2, 9)):
            ca, cb = make(a), make(b)
            out += _spots(ca + cb, [f"{a}{b}", str(a * b)])  # two labels are neither 12 nor 1 x 2
        for n in (1, 5, 9, 12, 16, 20):
            c = make(n)
            if c is not None:
                out += _spots(c, [str(n)]) + _spots(f"1{c}", [f"1{n}", str(n)])
    out += _spots("⓪", ["0"]) + _spots("①②③", ["123", "6"])
    return out


# Invisible characters: a reader sees "12"; the verifier must not read 2, 1 or 1 x 2.
_INVISIBLE = ["\u2060", "\u200b", "\u200c", "\u200d", "\ufeff", "\u00ad", "\u2061", "\u2062", "\u2063", "\u2064",
              "\u180e", "\ufe0f", "\u034f"]
# Direction controls reorder what is shown: "\u202e21" shows 12. Neither reading is accepted.
_BIDI = ["\u202a", "\u202b", "\u202c", "\u202d", "\u202e", "\u2066", "\u2067", "\u2068", "\u2069", "\u200e", "\u200f",
         "\u061c"]


def _invisible() -> list:
    out = []
    for ch in _INVISIBLE:
        for a, b in (("1", "2"), ("3", "4"), ("2", "5"), ("10", "0")):
            wrong = sorted({b, a, str(int(a) * int(b)), str(int(a) + int(b))} - {a + b})
            out += _spots(f"{a}{ch}{b}", wrong) + _spots(f"{a}{ch} {b}", wrong)
            out.append((f"So we get {a}{ch}{b}.", b, None))
    for ch in _BIDI:
        out += _spots(f"{ch}21", ["21", "12"]) + _spots(f"2{ch}1", ["21", "12"])
    return out


# Relations written with look-alike or plain symbols in front of a number are not that number.
_RELATIONS = ["≦", "≧", "≤", "≥", "<", ">", "＜", "＞", "﹤", "﹥", "≨", "≩", "≪", "≫", "⩽", "⩾", "≲", "≳", "≺", "≻",
              "≠", "≮", "≯", "≰", "≱", "\\le", "\\leq", "\\ge", "\\geq", "\\lt", "\\gt", "\\ne", "\\neq", "\\leqslant",
              "\\geqslant", "\\ll", "\\gg"]


def _relations() -> list:
    out = []
    for rel in _RELATIONS:
        for v in ("3", "12", "0.5"):
            out += _spots(f"{rel} {v}", [v]) + _spots(f"{rel}{v}", [v])
    return out


def _spaced_numbers() -> list:
    out = []
    for a in (1, 2, 3, 5, 9, 12):
        for b in (1, 4, 7, 10, 25):
            wrong = {str(a * b), str(a), str(b), f"{a}{b}"}
            for sep in (" ", "\\ ", "~", "\\,", "\\;", "\\quad "):
                if sep == "\\quad ":
                    wrong -= {str(a), str(b)}  # "a \quad b" is a list of two answers: never one of them
                out += [(s.format(v=f"{a}{sep}{b}"), g, None) for s in _SPOTS[:4] for g in sorted(wrong)]
    out += _spots("3 (4)", ["12"]) + _spots("(3) (4)", ["12"]) + _spots("x 3", ["3x"]) + _spots("2 3/4", ["1.5", "2.75"])
    out += _spots("12 34", ["1234", "408"]) + _spots("1.5 2", ["3", "1.52"]) + _spots("\\frac{1}{2} 4", ["2"])
    return out


_ALT_FORMS = ["The correct option is {a}, but {b} also works.", "The answer is {a}, but {b} is also correct.",
              "The answer is {a}, though {b} would also work.", "The answer is {a} (although {b} is also possible).",
              "The answer is {a}; {b} is also acceptable.", "\\boxed{{{a}}}, but {b} also works.",
              "The answer is {a}. However, {b} is also a valid answer.", "The answer is {a}. Alternatively, {b}.",
              "The answer is {a}, or possibly {b}.", "The answer is {a}, but {b} could also be right.",
              "The answer is {a}. {b} also works.", "Final answer: {a}, and {b} is correct too.",
              "The answer is {a}, but it could also be {b}.", "The answer is {a}, unless it is {b}.",
              "The answer is {a}. It might also be {b}.", "\\boxed{{{a}}} (or {b}, depending on the reading)",
              "The answer is {a}, but {b} works as well.", "The answer is {a}. But {b} is equally valid.",
              "The correct answer is {a}. Also accept {b}.", "The answer is {a}, otherwise {b}."]


def _alternatives() -> list:
    out = []
    for form in _ALT_FORMS:
        for a, b, choices in (("A", "B", None), ("A", "B", C4), ("C", "D", C4), ("(B)", "(A)", C4), ("12", "15", None),
                              ("\\frac{1}{2}", "\\frac{1}{3}", None), ("14", "16", C4)):
            gold = a.strip("()") if choices or a.strip("()").isalpha() else a
            out.append((form.format(a=a, b=b), gold, choices))
    return out


# Found in real model outputs (MathVista): answers that never commit, or commit to two options.
NON_COMMITTAL = [
    ("If the heart is wider than half the thorax, then the answer is (A) Yes. If it is not, then the answer is "
     "(B) No.\n\nWithout specific measurements we cannot determine the correct option letter.", "No", ["Yes", "No"]),
    ("If the sum is greater, the answer is A (Yes).\n\nIf the sum is smaller, the answer is B (No).\n\nWithout "
     "specific data, we cannot provide a definitive answer.", "No", ["Yes", "No"]),
    ("The question does not provide enough information to determine the value of f(0). Please provide the "
     "function f.", "0", None),
    ("To find the value of f(0), we need to substitute 0 into the function f(x).\n\nIf the function is not provided, "
     "it's impossible to find the value of f(0).", "0", None),
    ("The degree of a function is the highest power of the variable. For example, if f(x) = 3x^2 + 2x + 1, the "
     "degree is 2. Without the specific function, it's impossible to provide the degree.", "2", None),
    ("So, the correct answers are (B) 13 and (C) 26.", "26", ["6.5", "13", "26", "52"]),
    ("The answers are (B) and (C).", "C", C4),
    ("Therefore, the correct answer is (D) 140°.", "20°", ["45°", "40°", "25°", "20°"]),
    ("Therefore, the correct answer is (D) 140°.", "D", ["45°", "40°", "25°", "20°"]),
    ("The answer is (C) 12.", "C", C4),
    ("Using sin(C) = 0.8 and AB = 6, the length of AC is 10.", "12", ["10", "11", "12", "13"]),
    ("I cannot determine the answer from the image. It may be 4.", "4", None),
    ("The answer is 5. However, I am not sure, since the figure is unclear.", "5", None),
    # the lenient readings added for public model outputs must not open a door to two options or two numbers
    ("C) 14 or D) 16", "C", C4), ("C) 14 or D) 16", "D", C4), ("C. 14 or D. 16", "C", C4), ("C) or D)", "C", C4),
    ("It might be C, or it is D.", "D", C4), ("It is C or D.", "C", C4), ("Therefore, the exception is C and D.", "C", C4),
    ("The answer is 3 apples; 4 if we count pears.", "3", None), ("The answer is 3 apples; 4 if we count pears.", "4", None),
    ("The answer is 2 bars, maybe 3.", "2", None), ("The final value is 2 or 3.", "2", None),
    ("The answer is 12.\n\nQuestion: Is it 12 or 13?\nAnswer: 13", "12", None),
    ("The correct option letter is A (No).", "A", ["Yes", "No"]), ("The correct option is (C) 10.", "C", C4),
    # a capital used as a word ("I", "A") is not an option, but a second option beside it still is a hedge
    ("I pick (C) or (B).", "C", C4), ("I pick (C) or (B).", "B", C4), ("A fair pick is (A) or (C).", "A", C4),
]

LOOKALIKES = _superscripts() + _subscripts() + _enclosed() + _invisible() + _relations()
SPACED = _spaced_numbers()
ALTERNATIVES = _alternatives()
FAMILIES = {"look-alike digits": LOOKALIKES, "spaced numbers": SPACED, "alternatives": ALTERNATIVES,
            "non-committal": NON_COMMITTAL}


def test_each_generated_family_is_large():
    sizes = {name: len(rows) for name, rows in FAMILIES.items()}
    assert sizes["look-alike digits"] >= 1000 and sizes["spaced numbers"] >= 500 and sizes["alternatives"] >= 100, sizes


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("strict", [False, True], ids=["lenient", "strict"])
def test_generated_wrong_answers_are_never_accepted(family, strict, warm_pool):
    accepted = []
    for response, gold, choices in FAMILIES[family]:
        v = verify(response, gold, choices=choices, timeout=5.0, strict=strict)
        if v.correct:
            accepted.append((response, gold, choices, v))
    assert not accepted, f"{len(accepted)} of {len(FAMILIES[family])} accepted, e.g. {accepted[:8]}"
