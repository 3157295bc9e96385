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


# ---------------------------------------------------------------- forms of MathVista's released outputs that its labels read
YES_NO = ["yes", "no"]
SOLUTIONS = ["neither; their concentrations are the same", "Solution B", "Solution A"]
POPULATION = ["remains the same", "decrease", "increase", "NA"]
RIVER = ["30m", "30√{3}m", "(30√{3}+30)m", "(30√{3}-30)m"]
FOODS = ["soup", "water", "sandwich", "buns"]
BARS = ("There are 3 bars below 40 in the image. They are the bars for the years 2014, 2015, and 2016. The values "
        "for these bars are 58, 59, and 63, respectively.\n\nDo you want to try other questions about the image?")


@pytest.mark.parametrize("response, gold, choices, expected", [
    # a two-way option answered by the first word of the response
    ("No, Orange Red is not the high median. The high median is Forest Green.", "no", YES_NO, 1),
    ("No, Orange Red is not the high median. The high median is Forest Green.", "yes", YES_NO, 0),
    ("Yes, the function is continuous at each point.", "Yes", ["Yes", "No"], 1),
    ("Yes, the function is continuous at each point.", "No", ["Yes", "No"], 0),
    ("False. Intensity mapping function $T: z=1-r$ does not achieve the goal.", "False", ["True", "False"], 1),
    ("False. Intensity mapping function $T: z=1-r$ does not achieve the goal.", "True", ["True", "False"], 0),
    ("No, wait: yes, Orange Red is the high median.", "no", YES_NO, 0),  # taken back
    ("Yes and no: it depends on the scale.", "yes", YES_NO, 0),         # both
    # an option named by its own text at the end of the answer sentence
    ("The solution with a higher concentration of pink particles is Solution B.", "Solution B", SOLUTIONS, 1),
    ("The solution with a higher concentration of pink particles is Solution B.", "Solution A", SOLUTIONS, 0),
    ("If all the algae dies, the water flea population will decrease. This is because water fleas rely on algae "
     "as a food source.", "decrease", POPULATION, 1),
    ("If all the algae dies, the water flea population will decrease. This is because water fleas rely on algae "
     "as a food source.", "increase", POPULATION, 0),
    ("The width of the river AB is 30√{3}m.", "30√{3}m", RIVER, 1), ("The width of the river AB is 30m.", "30√{3}m", RIVER, 0),
    ("The population will either decrease or increase.", "decrease", POPULATION, 0),  # two options: none chosen
    ("The population will not decrease.", "decrease", POPULATION, 0),                 # negated
    # an option letter in a sentence that starts with "Option"
    ("Solution B is higher than Solution A. Option B is the correct answer.", "Solution B", SOLUTIONS, 1),
    ("Solution B is higher than Solution A. Option B is the correct answer.", "Solution A", SOLUTIONS, 0),
    # a quoted answer followed by its explanation
    ('The correct answer is "soup." Soup typically contains very few carbs, if any, compared to other foods like '
     'sandwiches, buns, or water.', "soup", FOODS, 1),
    ('The correct answer is "soup." Soup typically contains very few carbs, if any, compared to other foods like '
     'sandwiches, buns, or water.', "water", FOODS, 0),
    # a count stated first, with the numbers it was counted from after it
    (BARS, "3", None, 1), (BARS, "63", None, 0),
    ("There are two bars with values larger than 4.", "2", None, 1), ("There are two bars with values larger than 4.", "4", None, 0),
    ("In the table, there are 3 methods that achieve an A-847 score higher than 20.0.", "3", None, 1),
    ("In the table, there are 3 methods that achieve an A-847 score higher than 20.0.", "20", None, 0),
    ("There are 4 rows of 5 chairs. So there are 4 x 5 = 20 chairs.", "4", None, 0),  # a later result is the answer
])
def test_forms_from_mathvista_outputs(response, gold, choices, expected):
    assert ok(response, gold, choices) is bool(expected), verify(response, gold, choices=choices, timeout=10.0)
    if "answer is" not in response:  # nothing here is stated after a final-answer cue: strict refuses it
        assert not verify(response, gold, choices=choices, timeout=10.0, strict=True).correct


AREAS = ["54 cm^2", "58 cm^2", "60 cm^2", "62 cm^2"]


@pytest.mark.parametrize("response, gold, choices, expected", [
    # a boxed value restated by a boxed option letter, or boxed twice: one answer
    ("Thus the total is $\\boxed{58 \\text{ cm}^2}$, which is answer choice $\\boxed{\\text{(B)}}$.", "B", AREAS, 1),
    ("Thus the total is $\\boxed{58 \\text{ cm}^2}$, which is answer choice $\\boxed{\\text{(B)}}$.", "A", AREAS, 0),
    ("Thus the total is $\\boxed{58 \\text{ cm}^2}$, which is answer choice $\\boxed{\\text{(C)}}$.", "C", AREAS, 0),
    ("600 - 320 = \\boxed{280} cubic feet = \\boxed{280} blocks.", "280", None, 1),
    ("600 - 320 = \\boxed{280} cubic feet = \\boxed{281} blocks.", "280", None, 0),
    ("so the overlap is 60cm / 24 = \\boxed{2.5cm}. Answer: \\boxed{2.5}.", "2.5", None, 1),
    ("so the overlap is 60cm / 24 = \\boxed{2.5cm}. Answer: \\boxed{2.5}.", "2", None, 0),
])
def test_boxed_answer_restated(response, gold, choices, expected):
    assert ok(response, gold, choices) is bool(expected), verify(response, gold, choices=choices, timeout=10.0)


@pytest.mark.parametrize("response, gold, choices", [
    # replies that say they cannot solve the problem: no letter or number in them is their answer
    ("In the problem, you did not provide any diagram or more specific information available for the paths that "
     "will provide the answers (a, b, c, d, e). Therefore, it is not possible to solve your question.", "E", list("ABCDE")),
    ("Now we have 10 equations with 25 unknowns, meaning there is no unique solution. We need additional "
     "information. Once the value of x is found, we put it in the \\boxed{}.", "10", None),
])
def test_replies_that_cannot_solve_answer_nothing(response, gold, choices):
    assert not ok(response, gold, choices)


SAMPLES = ["neither; the samples have the same temperature", "sample A", "sample B"]
FUNCTIONS = ["a polynomial", "a trigonometric function", "an exponential function", "a logarithmic function"]
REGIONS = ["R1", "R2", "R5", "R3", "R4"]


@pytest.mark.parametrize("response, gold, choices, expected", [
    # "the answer is no, ..." after a cue
    ("So the answer is no, there are not fewer metallic fighters than rubber objects.", "No", ["Yes", "No"], 1),
    ("So the answer is no, there are not fewer metallic fighters than rubber objects.", "Yes", ["Yes", "No"], 0),
    # an option letter and a comma after a cue
    ('The correct answer is B, "no." Medium Orchid and Forest Green are not overlapping colors.', "no", YES_NO, 1),
    ('The correct answer is B, "no." Medium Orchid and Forest Green are not overlapping colors.', "yes", YES_NO, 0),
    # "A:" labels the answer (question-and-answer format) when another option's text follows it
    ("A: no", "no", YES_NO, 1), ("A: no", "yes", YES_NO, 0),
    ("A: Yes, Orange Red is the roughest.", "yes", YES_NO, 1), ("A: Yes, Orange Red is the roughest.", "no", YES_NO, 0),
    # a letter that opens the reply as the correct one
    ("A is the correct answer. The region R1 is larger than the region R2.", "R1", REGIONS, 1),
    ("A is the correct answer. The region R1 is larger than the region R2.", "R2", REGIONS, 0),
    # an option line whose text holds a capital letter or an article is one option, not two
    ("(B) Sample A", "sample A", SAMPLES, 1), ("(B) Sample A", "sample B", SAMPLES, 0),
    ("B) A trigonometric function.", "a trigonometric function", FUNCTIONS, 1),
    ("B) A trigonometric function.", "a polynomial", FUNCTIONS, 0),
    # the answer in bold in the reply's first sentence
    ("The market share of KLA is highest in **2019**, with 25.8%.\n\nIn 2018, KLA's market share was 23.1%. In 2020, "
     "it decreased to 15.4%.\n\nI hope this answers your question.", "2019", None, 1),
    ("The market share of KLA is highest in **2019**, with 25.8%.\n\nIn 2018, KLA's market share was 23.1%. In 2020, "
     "it decreased to 15.4%.\n\nI hope this answers your question.", "15.4", None, 0),
    ("So the median is **5** and the mean is **6**.", "5", None, 0),  # two bold values: neither
])
def test_forms_from_mathvista_outputs_2(response, gold, choices, expected):
    assert ok(response, gold, choices) is bool(expected), verify(response, gold, choices=choices, timeout=10.0)


@pytest.mark.parametrize("response, gold, choices", [
    ("(C) Yes\n(D) No", "Yes", ["Yes", "No"]),                        # the option list, continued: no answer
    ("(E) 12cm\n(F) 16cm\n(A) 14cm\n(B) 28cm\n(C) 10cm\n(D) 20cm", "20cm", ["14cm", "28cm", "10cm", "20cm"]),
    ("The average motorcycle gets about 40 to 50 miles per gallon on the highway.", "50", None),  # a range
    ("The average motorcycle gets about 40 to 50 miles per gallon on the highway.", "40", None),
])
def test_lists_and_ranges_answer_nothing(response, gold, choices):
    assert not ok(response, gold, choices)


FOOD_CHAIN = ["Grasshopper", "Snake", "Mouse", "Hawk"]


@pytest.mark.parametrize("response, gold, choices, expected", [
    # an option that opens the reply as its subject
    ("Solution A has a higher concentration of pink particles.", "Solution A", SOLUTIONS, 1),
    ("Solution A has a higher concentration of pink particles.", "Solution B", SOLUTIONS, 0),
    ("If there was a shortage of plants, grasshoppers would be most affected.", "Grasshopper", FOOD_CHAIN, 1),
    ("If there was a shortage of plants, grasshoppers would be most affected.", "Hawk", FOOD_CHAIN, 0),
    ("Snakes would not be affected by a shortage of plants.", "Snake", FOOD_CHAIN, 0),     # negated
    ("Solution A has more pink particles than Solution B.", "Solution A", SOLUTIONS, 0),  # two options named
])
def test_option_opening_the_reply(response, gold, choices, expected):
    assert ok(response, gold, choices) is bool(expected), verify(response, gold, choices=choices, timeout=10.0)


@pytest.mark.parametrize("response, gold, choices", [
    # misreadings found in all public responses: each refused
    ("There are 3 big blue shiny cubes initially.\nThere are 2 blue shiny spheres initially.\n\nAfter subtracting:\n"
     "- 3 big blue shiny cubes\n- 2 blue shiny spheres\n\nThere are 5 objects remaining.\n\nThe final number of objects "
     "left is 5.", "3", None),  # a later final count, not the first one
    ("The diagram shows two solutions, Solution A and Solution B. Solution A has a higher concentration of pink "
     "particles, as there are more pink balls in Solution A than in Solution B.", "Solution B", SOLUTIONS),
    ("C - All of above.", "All of above", ["Cricket will increase", "Mouse will increase", "Rabbit will increase",
                                           "All of above"]),  # letter C, text of D
])
def test_prose_readings_refuse_what_the_reply_does_not_choose(response, gold, choices):
    assert not ok(response, gold, choices)


def test_a_condition_before_the_answer_names_no_option():
    response = "If pelicans increase, secondary consumer fish and lizard populations may decrease."
    choices = ["decrease", "nothing", "increase", "none of the above"]
    assert ok(response, "decrease", choices) and not ok(response, "increase", choices)


LOBES = ["Inferior lobes", "Cardiac notch", "Superior lobes", "Middle lobe"]
MODELS = ["Baseline", "Diffusion", "PDE-Refiner", "Pushforward"]
TIME_WORDS = ["half", "quarter", "o'clock", "quarter to", "quarter past"]


@pytest.mark.parametrize("response, gold, choices, expected", [
    # an option's words joined by a space where the option has a hyphen
    ("The PDE Refiner has the lowest KS Rollout Loss overall.", "PDE-Refiner", MODELS, 1),
    ("The PDE Refiner has the lowest KS Rollout Loss overall.", "Baseline", MODELS, 0),
    # an option named in the singular (or the plural) of its last word
    ("The largest part of the lung is the superior lobe.", "Superior lobes", LOBES, 1),
    ("The largest part of the lung is the superior lobe.", "Inferior lobes", LOBES, 0),
    ("The largest part of the lung is the middle lobes.", "Middle lobe", LOBES, 1),
    # an option ending the main clause before ", written as ..."
    ("The time shown is six o'clock, written as \"6:00\" or \"6 - 0 - 0\".", "o'clock", TIME_WORDS, 1),
    ("The time shown is six o'clock, written as \"6:00\" or \"6 - 0 - 0\".", "half", TIME_WORDS, 0),
])
def test_option_words_as_written_in_prose(response, gold, choices, expected):
    assert ok(response, gold, choices) is bool(expected), verify(response, gold, choices=choices, timeout=10.0)


@pytest.mark.parametrize("response, gold, choices", [
    ("The largest part is the superior lobe, not the inferior lobe.", "Inferior lobes", LOBES),
    ("The largest part is the inferior lobe and the superior lobe.", "Superior lobes", LOBES),  # two options named
    ("The PDE Refiner does not have the lowest loss.", "PDE-Refiner", MODELS),  # negated
    ("The best one is the grass.", "gras", ["gras", "mouse", "owl"]),  # "grass" is no plural of "gras"
])
def test_option_words_in_prose_refused(response, gold, choices):
    assert not ok(response, gold, choices)


EGGS = ["15", "13", "11", "8"]


@pytest.mark.parametrize("response, gold, choices, expected", [
    # a reply that goes on to a question it made up: its answer to this question is the one before that
    ("因此,答案为D\n\nQuestion: How many eggs does the recipe call for?\nChoices:\nA. 1\nB. 2\n\nSolution: The recipe "
     "lists 2 eggs.\n\nThe answer is B.", "13", EGGS, 0),
    ("I do not have enough information to determine if f(3) > 0.\n\nQuestion: Let f(x) = 2x + 3. Is f(3) > 0?\n"
     "Solution: f(3) = 9 > 0, so the answer is:\nA) Yes", "Yes", ["Yes", "No"], 0),  # its only answer is another's
    # an echoed prompt opening the reply is no run-on: the answer after it counts
    ("Question: How many eggs?\nChoices: (A) 15 (B) 13 (C) 11 (D) 8\nAnswer: (D) 8", "8", EGGS, 1),
    ("Question: How many eggs?\nChoices: (A) 15 (B) 13 (C) 11 (D) 8\nAnswer: (D) 8", "13", EGGS, 0),
    # the same answer restated in the run-on stands
    ("The answer is (A) yes.\n\nQuestion: Is Light Slate less than Saddle Brown?\nAnswer: (A) yes", "yes", ["yes", "no"], 1),
])
def test_answer_before_a_made_up_question(response, gold, choices, expected):
    assert ok(response, gold, choices) is bool(expected), verify(response, gold, choices=choices, timeout=10.0)


FLEAS = ["remains the same", "decrease", "increase", "NA"]
FLEAS_WHY = ("B) decrease\n\nThe food web diagram shows that water fleas feed on algae. If the algae population dies off, "
             "there will be less food available for the water fleas, so their population will likely decrease.")


@pytest.mark.parametrize("response, gold, choices, expected", [
    # an option line with the option's own text opening the reply, the reasons after it
    (FLEAS_WHY, "decrease", FLEAS, 1), (FLEAS_WHY, "increase", FLEAS, 0), (FLEAS_WHY, "NA", FLEAS, 0),
    ("B) decrease\n\nWait, actually the population will increase.", "decrease", FLEAS, 0),  # taken back
    ("B) decrease\nC) increase", "decrease", FLEAS, 0),  # two option lines: a list, no choice
    ("B) increase\n\nThe population will increase.", "increase", FLEAS, 0),  # the letter of another option's text
])
def test_option_line_opening_the_reply(response, gold, choices, expected):
    assert ok(response, gold, choices) is bool(expected), verify(response, gold, choices=choices, timeout=10.0)


SNACKS = ["salami", "wine", "cheese", "bread"]
RUN_ON_LETTER = ("The option with the most protein is A (salami).\n\nQuestion: When traveling from Las Vegas to Reno, is the "
                 "distance:\nA) Less than 500 miles\nB) Between 500-1000 miles\n\nSolution: It is less than 500 miles.\n\n"
                 "The answer is A (Less than 500 miles).")


@pytest.mark.parametrize("response, gold, choices, expected", [
    # in a run-on, a letter with another question's text restates nothing: the answer before it is hedged
    (RUN_ON_LETTER, "salami", SNACKS, 0),
    # the same option with its own text, restated in a run-on that repeats the question, stands
    ("The answer is (C) decrease.\n\nAnswer: (C) decrease.\n\nQuestion: Which is a correct statement?\n(A) It would "
     "increase.\n(B) It would decrease.\nAnswer: (B) It would decrease.", "decrease",
     ["double", "skyrocket", "decrease", "increase"], 1),
])
def test_letters_restated_in_a_run_on(response, gold, choices, expected):
    assert ok(response, gold, choices) is bool(expected), verify(response, gold, choices=choices, timeout=10.0)
