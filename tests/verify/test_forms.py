"""Answer forms from real model output, each in the stage that handles it (extraction,
normalisation, comparison), with a wrong twin beside each right one."""

from __future__ import annotations

import pytest

from mathse_rl.verify import extract_answer, gold_is_valid, verify
from mathse_rl.verify.core import gold_text

C4 = ["10", "12", "14", "16"]


def ok(response, gold, choices=None):
    return verify(response, gold, choices=choices, timeout=10.0).correct


# ---------------------------------------------------------------- extraction
@pytest.mark.parametrize("response, expected", [
    ("So, there are 25 racks that have at least 0 ties.", "25"),          # a condition number is not the answer
    ("Therefore, there are 4 queries with a p-value lower than 0.50.", "4"),
    ("He will be done in 4 weeks.", "4"),                                  # nothing else to take
    ("After removing them, there are a total of four objects left.", "4"),  # a number word
    ("Final Answer: The final answer is \"$12$ and $13$\".", "12, 13"),     # math spans joined by "and"
    ("The answer is $x=1$ or $x=2$.", "x=1, x=2"),
    ("\\boxed{1} papers and \\boxed{2} bins", "1, 2"),                       # boxes joined by a short phrase
    ("\\boxed{1} no no no no no \\boxed{2}", "2"),                          # ... but not by any words
    ("Soucis : 2,74 $ a..", "2,74"),                                        # a decimal comma stays whole
])
def test_extraction_forms(response, expected):
    assert extract_answer(response) == expected


def test_an_echoed_option_list_is_not_a_choice():
    echo = "Is Sky Blue less than Web Maroon?\nChoices:\n(A) yes\n(B) no\nQuestion: Is Salmon less?\nChoices:\n(A) yes\n(B) no"
    assert extract_answer(echo, choices=["yes", "no"]) is None
    assert not ok(echo, "no", ["yes", "no"])
    assert extract_answer("It must be (B) given the angle", choices=C4) == "B"


# ---------------------------------------------------------------- the gold
@pytest.mark.parametrize("gold, expected", [
    ("\\(\\boxed{1}\\) and \\(\\boxed{-2}\\).", "1, -2"),
    (" So the answer is: \\[ \\boxed{32349} \\]", "32349"),
    ("Let $x$ be the share. Then $2x = 8$, so $x = 4$ and the answer is $\\boxed{4}$.", "4"),
    ("The number of aquatic crustaceans will decrease", "The number of aquatic crustaceans will decrease"),
    ("12", "12"),
])
def test_gold_given_as_a_solution_reads_its_final_answer(gold, expected):
    assert gold_text(gold) == expected
    assert gold_is_valid(gold)


def test_worked_solution_gold_against_responses():
    gold = "Setting $x = 0$ gives $f(0) = -1$, so the answer is $\\boxed{-1}$."
    assert ok("The answer is $-1$.", gold) and not ok("The answer is $0$.", gold)
    assert ok("$\\boxed{-2,1}$.", "\\(\\boxed{1}\\) and \\(\\boxed{-2}\\).")
    assert not ok("$\\boxed{-2,2}$.", "\\(\\boxed{1}\\) and \\(\\boxed{-2}\\).")


# ---------------------------------------------------------------- labels and equations
@pytest.mark.parametrize("response, gold, expected", [
    ("\\boxed{(p,q)=(3,2)}", "(3,2)", 1), ("\\boxed{(p,q)=(3,1)}", "(3,2)", 0),
    ("\\boxed{(3,2)}", "(p,q)=(3,2)", 1),
    ("\\boxed{|AB|=1}", "1", 1), ("\\boxed{|AB|=2}", "1", 0),
    ("\\boxed{x + y = 4027}", "4027", 1), ("\\boxed{x + y = 4026}", "4027", 0),
    ("\\boxed{\\frac{1}{\\sqrt{6}}}", "\\frac{NO}{BO}=\\frac{1}{\\sqrt{6}}", 1),
    ("\\boxed{V_1:V_2=11:21}", "11:21", 1), ("\\boxed{V_1:V_2=11:20}", "11:21", 0),
    ("\\boxed{AB=4, CD=5}", "4, 5", 1), ("\\boxed{AB=4, CD=6}", "4, 5", 0),
    ("\\boxed{x^2 = 4}", "4", 0), ("\\boxed{2x = 6}", "3", 0),
])
def test_labelled_answers(response, gold, expected, warm_pool):
    assert ok(response, gold) is bool(expected)


# ---------------------------------------------------------------- inequalities, several answers
@pytest.mark.parametrize("response, gold, expected", [
    ("\\boxed{-2 \\le x \\le 7}", "x \\in [-2,7]", 1), ("\\boxed{-2 < x \\le 7}", "x \\in [-2,7]", 0),
    ("\\boxed{(0,1)}", "0<f(x)<1", 1), ("\\boxed{(0,1]}", "0<f(x)<1", 0),
    ("\\boxed{1} and \\boxed{-2}", "\\boxed{-2,1}", 1), ("\\boxed{1} and \\boxed{2}", "\\boxed{-2,1}", 0),
    ("The roots are $x=2$ or $x=3$. So the answer is \\boxed{2 \\text{ or } 3}", "3, 2", 1),
    ("\\boxed{2 \\quad 3}", "2, 3", 1), ("\\boxed{2 \\quad 4}", "2, 3", 0),
    ("\\boxed{(3, 37), (3, 17), (3,17)}", "(3,17),(3,37)", 1), ("\\boxed{(3, 37), (3, 18)}", "(3,17),(3,37)", 0),
    ("${-2021, 2021}$", "\\pm 2021", 1), ("\\boxed{2021}", "\\pm 2021", 0),
])
def test_intervals_and_several_answers(response, gold, expected, warm_pool):
    assert ok(response, gold) is bool(expected)


# ---------------------------------------------------------------- separators, escapes and debris
@pytest.mark.parametrize("response, gold, expected", [
    ("is $\\boxed{11,\\! 111,\\! 111,\\! 100}$", "11111111100", 1), ("\\boxed{11,\\!111,\\!100}", "11111100", 1),
    ("\\boxed{10{,}000}", "10000", 1), ("\\boxed{10{,}001}", "10000", 0),
    ("\\boxed{\\$12.50}", "12.5", 1), ("\\boxed{\\$12.51}", "12.5", 0),
    ("The answer is 3.</s>", "3", 1), ("The answer is 3<|im_end|>", "3", 1), ("\\boxed{3.}", "3", 1),
    ("The answer is 4.</s>", "3", 0),
    ("1000,99", "1000.99", 1), ("1000,98", "1000.99", 0), ("0.111", "0,111", 1), ("\\boxed{1,000}", "1000", 1),
    ("\\boxed{2, 74}", "2.74", 0),  # a comma and a space: a list, never a decimal comma
])
def test_separators_escapes_and_debris(response, gold, expected):
    assert ok(response, gold) is bool(expected)


# ---------------------------------------------------------------- multiple choice with option text
@pytest.mark.parametrize("response, gold, choices, expected", [
    ("The answer is B (No)", "No", ["Yes", "No"], 1), ("The answer is A (Yes)", "No", ["Yes", "No"], 0),
    ("The answer is (B), No", "No", ["Yes", "No"], 1),
    ("The answer is (D) 60 degrees", "60^\\circ", None, 1), ("The answer is (D) 50 degrees", "60^\\circ", None, 0),
    ("The answer is \\frac{6}{\\pi}", "B", ["3:\\pi", "6:\\pi", "9:\\pi"], 1),
    ("The answer is \\frac{3}{\\pi}", "B", ["3:\\pi", "6:\\pi", "9:\\pi"], 0),
    ("Thus, the answer is C (0.4 - 0.6).", "0.0 - 0.2", ["0.0 - 0.2", "0.2 - 0.4", "0.4 - 0.6"], 0),
    ("Thus, the answer is A (0.0 - 0.2).", "0.0 - 0.2", ["0.0 - 0.2", "0.2 - 0.4", "0.4 - 0.6"], 1),
])
def test_choices_with_option_text(response, gold, choices, expected):
    assert ok(response, gold, choices) is bool(expected)


# ---------------------------------------------------------------- matrices with decimal entries
@pytest.mark.parametrize("response, gold, expected", [
    ("$\\begin{pmatrix}0.33\\\\0.2 \\end{pmatrix}$", "$(\\begin{pmatrix}\\frac{1}{3}\\\\ \\frac{1}{5} \\end{pmatrix})$", 1),
    ("$\\begin{pmatrix}0.3\\\\0.2 \\end{pmatrix}$", "$(\\begin{pmatrix}\\frac{1}{3}\\\\ \\frac{1}{5} \\end{pmatrix})$", 0),
    ("$\\begin{bmatrix}1.41 & 0\\\\0 & 1\\end{bmatrix}$", "\\begin{pmatrix}\\sqrt{2} & 0\\\\0 & 1\\end{pmatrix}", 1),
    ("$\\begin{bmatrix}1.41 & 0\\\\0 & 2\\end{bmatrix}$", "\\begin{pmatrix}\\sqrt{2} & 0\\\\0 & 1\\end{pmatrix}", 0),
])
def test_matrices(response, gold, expected, warm_pool):
    assert ok(response, gold) is bool(expected)


def test_fractional_powers_at_negative_points_do_not_decide():
    # x^{2/3} and (cube root of x)^2 differ on the complex branch at negative x: those points are skipped.
    assert ok("\\boxed{\\frac{1}{3x^{2/3}}}", "\\frac{1}{3\\sqrt[3]{x}^2}")


@pytest.mark.parametrize("response, gold, expected", [
    ("\\boxed{\\frac{2}{3}}", "2:3", 1), ("\\boxed{4/6}", "2:3", 1), ("\\boxed{\\frac{3}{2}}", "2:3", 0),
    ("\\boxed{1}", "2:2", 0), ("\\boxed{0.5}", "1:2", 0), ("\\boxed{12:05}", "12:50", 0),
])
def test_ratio_against_fraction_policy(response, gold, expected):
    # A ratio equals a *written* fraction of the same value; a bare number never answers a ratio.
    assert ok(response, gold) is bool(expected)


# ---------------------------------------------------------------- look-alike digits: the reader's reading
@pytest.mark.parametrize("response, gold, expected", [
    ("The answer to this problem is 2⁵.", "32", 1), ("The answer to this problem is 2⁵.", "25", 0),  # an exponent
    ("\\boxed{2¹⁰}", "1024", 1), ("\\boxed{2¹⁰}", "210", 0), ("\\boxed{10⁻²}", "0.01", 1), ("\\boxed{x⁵}", "x^5", 1),
    ("\\boxed{x⁵}", "5x", 0), ("\\boxed{3x²+1}", "3x^2+1", 1), ("\\boxed{2²}", "4", 1),
    ("\\boxed{101₂}", "101_2", 1), ("\\boxed{101₂}", "101_{2}", 1), ("\\boxed{101₂}", "1012", 0),  # a base, not a digit
    ("\\boxed{101₂}", "5", 0), ("\\boxed{x₁+x₂}", "x_1+x_2", 1),
    ("答案是１２", "12", 1), ("\\boxed{𝟏𝟐}", "12", 1),  # full-width and mathematical digits are the same digits
    ("\\boxed{①②}", "12", 0), ("\\boxed{①③}", "①③", 1), ("\\boxed{①③}", "②④", 0),  # labels compare as written
    ("\\boxed{٣}", "3", 0), ("\\boxed{Ⅻ}", "12", 0),  # other scripts' digits and Roman numerals are not read as numbers
    ("So we get 1\u20602.", "12", 1), ("So we get 1\u20602.", "2", 0),  # an invisible joiner: read what is shown
    ("\\boxed{1\u200b2}", "12", 1), ("\\boxed{12\ufeff}", "12", 1),
    ("\\boxed{\u202e21}", "21", 0), ("\\boxed{\u202e21}", "12", 0),  # a direction override: refused either way
    ("\\boxed{1 000}", "1000", 1), ("\\boxed{12\\,345}", "12345", 1),  # a thousands group after a space stays one number
    ("\\boxed{3 4}", "3, 4", 0), ("\\boxed{2(3)}", "6", 1), ("\\boxed{2\\sqrt{3}}", "\\sqrt{12}", 1),
    ("\\boxed{3\\left(x+1\\right)}", "3x+3", 1), ("\\boxed{2 x}", "2x", 1),
    ("\\boxed{x \\le 3}", "x \\le 3", 1), ("\\boxed{\\le 3}", "\\le 3", 1),
])
def test_lookalike_digits_and_separators(response, gold, expected, warm_pool):
    assert ok(response, gold) is bool(expected), verify(response, gold, timeout=10.0)


# ---------------------------------------------------------------- forms real models write (public outputs)
@pytest.mark.parametrize("response, gold, choices, expected", [
    # an equation whose left side is a function value
    ("\\boxed{I(6,3) = 0}", "0", None, 1), ("\\boxed{I(6,3) = 0}", "1", None, 0), ("\\boxed{f(2) = 5}", "5", None, 1),
    ("\\boxed{P(A) = 0.3}", "0.3", None, 1), ("\\boxed{g(1, 2) = 7}", "8", None, 0),
    # an option in markdown bold
    ("The correct answer is **(D)**.\n\nThe perimeter of a parallelogram is twice the sum.", "D", C4, 1),
    ("The correct answer is **(D)**.", "C", C4, 0),
    ("The correct answer is **(B) no**.\n\nThe number of labels for Web Green is 70, while the number for Yellow is "
     "85. Therefore, Web Green is not greater than Yellow.\n\nI hope this answers your question. Let me know if you "
     "have any other questions.", "no", ["yes", "no"], 1),
    ("The correct answer is **(B)**, No.\n\nThis function is not odd because $(1/2)^{-x} = 2^x$, which is not equal "
     "to $-(1/2)^x$.\n\nI hope this helps! Let me know if you have any other questions.", "No", ["Yes", "No"], 1),
    ("The answer is **(A) Yes**.\n\nTherefore, the epigraph of a function f is an infinite set.\n\nChoice (B) is "
     "incorrect because the epigraph is infinite.", "Yes", ["Yes", "No"], 1),
    ("The correct answer is **(A) Yes**.", "No", ["Yes", "No"], 0), ("The answer is **(D)**, the frontal lobe.", "frontal lobe",
                                                     ["cerebellum", "occipital lobe", "parietal lobe", "frontal lobe"], 1),
    ("The perimeter is PC + CD + PD = 4 + 8 + 4 = **16**.", "16", ["8", "12", "16", "不能确定"], 1),
    # an option letter followed by its LaTeX text
    ("The correct option is (D) \\frac{4}{5}.", "\\frac{4}{5}", ["\\frac{2}{3}", "\\frac{3}{5}", "\\frac{3}{4}", "\\frac{4}{5}"], 1),
    ("Thus, the answer is (A) $\\frac{4}{5}$.", "\\frac{4}{5}", ["\\frac{4}{5}", "\\frac{6}{5}", "1", "2"], 1),
    ("The correct option is (D) \\frac{4}{5}.", "\\frac{2}{3}", ["\\frac{2}{3}", "\\frac{3}{5}", "\\frac{3}{4}", "\\frac{4}{5}"], 0),
    ("The correct option is (C) \\frac{4}{5}.", "C", ["\\frac{2}{3}", "\\frac{3}{5}", "\\frac{3}{4}", "\\frac{4}{5}"], 0),
    ("The answer is (B) $\\frac { 5 } { 3 } \\pi$.", "\\frac { 5 } { 3 } \\pi", ["\\frac { 3 } { 5 } \\pi", "\\frac { 5 } { 3 } \\pi", "5 \\pi"], 1),
    # an adverb between the cue and the answer
    ("The answer is therefore B (No).", "No", ["Yes", "No"], 1), ("The answer is therefore A (Yes).", "No", ["Yes", "No"], 0),
    ("The correct option is therefore (B).", "no", ["yes", "no"], 1), ("The answer is thus 12.", "12", None, 1),
    # a stray backslash before a number
    ("\\boxed{\\15}", "15", None, 1), ("\\boxed{\\15}", "16", None, 0), ("The total is $\\boxed{\\$15}$.", "15", None, 1),
    # a boxed answer followed by a further explanation
    ("Therefore, $m \\angle K = \\boxed{100}$ degrees.\n\nNote that we could have also found $m \\angle K$ by noticing "
     "that the trapezoid is isosceles, so its base angles are congruent.", "100", None, 1),
    ("So the answer is (C).\n\nLet the shorter diagonal be x. Then the longer is 2x, so x = 13. Therefore, the longer "
     "diagonal is 26.", "26", ["6.5", "13", "26", "52"], 1),
    ("So the answer is (C).\n\nThe percentage is 31/88 = 0.348 = 34.8% which is approximately 31%.", "Around 31%",
     ["Around 21%", "Around 27%", "Around 31%", "Around 37%"], 1),
    ("The answer is 12.\n\nTo check: the total is 3 + 4 + 5 = 12, so the answer is 12.", "12", None, 1),
    ("The answer is 12.\n\nOn reflection the answer is 15.", "12", None, 0),  # a later final answer still counts
    # a polite closing
    ("In the graph, this point is at x = 3. So the answer is **3**.\n\n* Therefore, the local maximum point of the "
     "function is at x = 3.\n\nI hope this helps! Let me know if you have any other questions.", "3", None, 1),
    ("Therefore, Web Green is not greater than Yellow. The answer is (B).\n\nI hope this answers your question. Let me "
     "know if you have any other questions.", "no", ["yes", "no"], 1),
    # a count followed by what it counts
    ("So, the answer to the question is 2 bars have values larger than 4.</s>", "2", None, 1),
    ("So, the answer to the question is 2 bars have values larger than 4.</s>", "4", None, 0),
    ("The answer to the question is 2, as there are two stores where items sold less than 5 units.", "2", None, 1),
    ("So the answer is 1982 with an actual total income of $931,441.", "1982", None, 1),
    ("The answer is 2 or 3 bars.", "2", None, 0), ("The answer is 2 more than 4.", "2", None, 0),
    # the option letter named by its own line, or by the last word of the answer
    ("C) 5√3 m", "5√{3}m", ["10m", "5m", "5√{3}m", "10√{3}m"], 1), ("C. Fish", "Fish", ["Plant", "Phyto-plankton", "Fish", "Lizard"], 1),
    ("C. Fish", "Plant", ["Plant", "Phyto-plankton", "Fish", "Lizard"], 0),
    ("Therefore, the organism whose population would decrease is C) lizard.", "lizard", ["plant", "human", "lizard", "snake"], 1),
    ("- d and e are corresponding angles, so E is false.\n\nTherefore, the exception is E.", "d + e = f + j",
     ["a + b = j + l", "g = h", "c + f = f + b", "g + e + f + h = 360", "d + e = f + j"], 1),
    ("The correct option is (C) C.", "C", ["A", "B", "C"], 1), ("The correct option is (C) C.", "B", ["A", "B", "C"], 0),
    ("The correct option letter is A (Yes).", "Yes", ["Yes", "No"], 1), ("The correct option letter is: B (No)", "No", ["Yes", "No"], 1),
    ("The correct option letter is A (Yes).", "No", ["Yes", "No"], 0),
    ("Therefore, the length of AC is 6cm.\n\nThus, the answer is A (6cm).", "6cm", ["6cm", "7cm", "4cm", "5cm"], 1),
    ("所以，ABCD的周长为5+5+7+7=24，因此选项为(D) 24。", "24", ["12", "14", "35", "24"], 1),
    ("所以，ABCD的周长为5+5+7+7=24，因此选项为(C) 35。", "24", ["12", "14", "35", "24"], 0),
    # a stated value, a label number and a new turn after the answer
    ("The question requires an integer answer and the final value is 2. In 2008, 2011, and 2014, imports were greater.", "2", None, 1),
    ("```output\n16.0\n```\n16 people think that horse #12 will win the big race.", "16", None, 1),
    ("```output\n16.0\n```\n16 people think that horse #12 will win the big race.", "12", None, 0),
    ("Final Answer: The maximum number of points that could be in the domain of $f(x)$ is 19. <|im_start|>user", "19", None, 1),
    # a run-on that only restates the same answer stands; one that states another, or none, does not
    ("Answer: The amplitude is 1.\n\nQuestion: What is the amplitude of this function?\n\nAnswer: The amplitude is 1.\n\n"
     "Question: What is the amplitude of this function?\n\nAnswer: The amplitude is 1.", "1", None, 1),
    ("Answer: 2.\n\nQuestion: How many objects are preferred by more than 7 people?\n\nAnswer: 3.", "2", None, 0),
    # a sentence that only says what is not in the picture is no refusal; a ratio is not its last term
    ("The image does not contain any bars with numeric values. Since there are no bars with values below 6, the "
     "number of bars with values smaller than 6 is 0.", "0", None, 1),
    ("The ratio of the number of procedures in 2004 to that in 2007 is 3:1.", "1", None, 0),
])
def test_forms_from_real_outputs(response, gold, choices, expected, warm_pool):
    assert ok(response, gold, choices) is bool(expected), verify(response, gold, choices=choices, timeout=10.0)
    if expected and ("\\boxed" in response or "answer is" in response):  # each is a stated answer: strict agrees
        assert verify(response, gold, choices=choices, timeout=10.0, strict=True).correct
