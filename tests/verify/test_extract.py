"""Where the answer is found in a free-form response, most specific form first."""

from __future__ import annotations

import pytest

from mathse_rl.verify import extract_answer
from mathse_rl.verify.extract import MAX_SCAN_CHARS, extract

C4 = ["10", "12", "14", "16"]


@pytest.mark.parametrize("response, expected", [
    # after the last </think>; reasoning left open means no answer yet
    ("<think>maybe \\boxed{3}</think> The answer is \\boxed{4}", "4"),
    ("<think>a</think><think>b \\boxed{1}</think>so 2", "2"),
    ("<think>unfinished \\boxed{5}", None),
    # the last box wins; nested braces; \fbox; several boxes written together form a set
    ("first \\boxed{1}\n\nthen \\boxed{\\frac{1}{\\sqrt{2}}}", "\\frac{1}{\\sqrt{2}}"),
    ("\\fbox{7}", "7"),
    ("\\boxed{2} and \\boxed{3}", "2, 3"),
    ("step: \\boxed{5}\nlots more reasoning on a new line\nfinally \\boxed{7}", "7"),
    ("\\boxed 5", "5"),
    # phrases
    ("So x=2. The answer to this problem is $\\frac{3}{4}$.", "\\frac{3}{4}"),
    ("Therefore, the final answer is $x = 4$.", "x = 4"),
    ("Final answer: 12", "12"),
    ("Answer: (A) 45°", "(A) 45°"),
    ("The answer is C. 14", "C. 14"),
    ("所以答案是 $2\\sqrt{2}$。", "2\\sqrt{2}"),
    ("答案为 5", "5"),
    ("故选 B", "B"),
    ("The answer is 7, because 3 + 4 = 7.", "7"),
    ("**Answer:** 12", "12"),
    ("Final Answer: The final answer is $5$. I hope it is correct.", "5"),
    ("6 * 7 = 42 so\n#### 42", "42"),
    ("the answer is \\(\\frac{1}{2}\\).", "\\frac{1}{2}"),
    # <answer> tags
    ("<think>x</think><answer>12</answer>", "12"),
    ("<answer>So the answer is $\\frac{1}{2}$.</answer>", "\\frac{1}{2}"),
    ("<answer>$x = 3$</answer>", "x = 3"),
    # a bare option letter on the last line
    ("Comparing the options...\nB.", "B"),
    # last number, and a final math span around it
    ("I computed 3 + 4 = 7, so there are 7 apples.", "7"),
    ("The point is $(−1, 3)$.", "(−1, 3)"),
    ("There are 1,000 ways.", "1,000"),
    ("no digits at all", None),
    # a response that is only an answer is taken whole
    ("$E$", "E"), ("\\frac{10}{9}", "\\frac{10}{9}"), ("1 000", "1 000"), ("Yes", "Yes"), ("-.5", "-.5"),
    # the final-answer sentence after the last box overrides it
    ("so \\boxed{255} is the interest. Final Answer: The final answer is $10,455$. I hope it is correct.", "10,455"),
    # "X is Y" inside the answer sentence, and numbers inside prose
    ("Final Answer: The volume of $ABCDEFGH$ is 120. I hope it is correct.", "120"),
    ("Final Answer: Jane started growing the sphere 3 hours ago. I hope it is correct.", "3"),
    ("AZYUK2A", None),
    ("", None),
])
def test_extract_answer(response, expected):
    assert extract_answer(response) == expected


@pytest.mark.parametrize("response, letter", [
    ("So the correct option is (C).", "(C)"),
    ("Looking at the figure, option D fits best", "D"),
    ("It must be (B) given the angle", "B"),
])
def test_option_letters_with_choices(response, letter):
    assert extract_answer(response, choices=C4) == letter


def test_several_boxes_are_kept_as_parts():
    ex = extract("roots: \\boxed{-1}, \\boxed{2}")
    assert ex.source == "boxed" and ex.parts == ("-1", "2")


def test_only_the_tail_of_a_huge_output_is_scanned():
    huge = "\\boxed{1} " + "1 " * (MAX_SCAN_CHARS) + "The answer is \\boxed{3}"
    assert extract_answer(huge) == "3"
    # an early box beyond the scanned tail is not seen
    assert extract_answer("\\boxed{9}" + " x" * MAX_SCAN_CHARS) is None


@pytest.mark.parametrize("response", [
    "<think>a \\boxed{1}</think> so \\boxed{2}", "<think>open \\boxed{1}", "", "x" * (3 * MAX_SCAN_CHARS) + " \\boxed{5}",
    "plain 7", "<think>a</think>" + "y" * (2 * MAX_SCAN_CHARS) + "Answer: 3",
])
def test_trim_keeps_what_extraction_sees(response):
    from mathse_rl.verify.extract import trim

    assert extract(trim(response)) == extract(response)
    assert len(trim(response)) <= MAX_SCAN_CHARS
