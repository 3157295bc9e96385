"""Each benchmark's scoring rules, on top of the verifier (no LLM)."""

from __future__ import annotations

import json

import pytest

from mathse_rl.eval import get_benchmark, load_benchmark
from mathse_rl.eval.scoring import chosen_option, edit_distance, nearest_option, option_named, plain_number

from .conftest import FIXTURES


@pytest.fixture(scope="module")
def vista():
    bench = get_benchmark("mathvista")
    rows = json.loads((FIXTURES / "mathvista_testmini.json").read_text())
    return bench, {pid: bench.problem(row, 0, "testmini") for pid, row in rows.items()}


def test_mathvista_multiple_choice_is_scored_on_the_option_text(vista):
    bench, p = vista
    for response in ("The correct answer is **(B) 102**.", "So x = 102 degrees.", "Answer: B"):
        s = bench.score(p["2"], response)
        assert (s.correct, s.prediction) == (True, "102"), response
    wrong = bench.score(p["2"], "The answer is (C).")
    assert (wrong.correct, wrong.prediction) == (False, "107")


def test_mathvista_extraction_naming_an_option_in_parentheses_maps_to_it(vista):
    # The verifier reads "(B) No**" whole; the release's own normalisation takes the letter in parentheses.
    bench, p = vista
    s = bench.score(p["5"], "The correct answer is **(B) No**.\n\nThe red bar is shorter.")
    assert (s.correct, s.prediction) == (True, "No")


def test_mathvista_response_naming_no_option_gets_the_nearest_one_like_the_release(vista):
    bench, p = vista
    s = bench.score(p["2"], "")  # the release maps an empty extraction to the most similar (shortest) option
    assert (s.prediction, s.reason) == ("97", "nearest_option")
    bench.nearest_option = False
    try:
        strict = bench.score(p["2"], "")
        assert (strict.correct, strict.prediction) == (False, None)
    finally:
        bench.nearest_option = True


def test_mathvista_hedge_is_not_read_as_an_option_but_still_mapped_by_the_release_rule(vista):
    bench, p = vista
    s = bench.score(p["2"], "The answer is A or B.")
    assert s.reason == "nearest_option" and s.extraction == "A or B"


def test_mathvista_integer_answers_truncate_like_int_float(vista):
    bench, p = vista
    s = bench.score(p["3"], "It is about 14.3 bars.")
    assert (s.correct, s.prediction, s.reason) == (True, "14", "precision")
    assert bench.score(p["3"], "It is 13.9.").correct is False  # int(13.9) = 13: the release truncates


def test_mathvista_float_answers_round_to_the_row_precision(vista):
    bench, p = vista
    assert bench.score(p["1"], "a = 1.24 m/s^2").correct is True  # precision 1: 1.24 -> 1.2
    assert bench.score(p["1"], "a = 1.26 m/s^2").correct is False  # 1.3
    assert bench.score(p["1"], "a = \\frac{6}{5}").correct is True  # the verifier's own equality


def test_mathvista_list_answers_compare_element_by_element(vista):
    bench, p = vista
    assert bench.score(p["4"], "The answer is [2014,2016].").correct is True  # the verifier's equality
    s = bench.score(p["4"], "The line peaks between [2014,2016].")  # the verifier reads 2014,2016
    assert (s.correct, s.prediction, s.reason) == (True, "[2014, 2016]", "list")  # the release's str(list)
    assert bench.score(p["4"], "Between [2013, 2016].").correct is False


def test_mathvista_test_split_has_no_answer_and_is_not_scored():
    bench = get_benchmark("mathvista")
    row = json.loads((FIXTURES / "mathvista_testmini.json").read_text())["2"]
    p = bench.problem({**row, "answer": ""}, 0, "test")
    s = bench.score(p, "The answer is (C).")
    assert s.correct is None and s.prediction == "107"


def test_mathvista_official_prompt_is_the_row_query_or_the_release_layout(vista):
    bench, p = vista
    text = bench.prompt(p["2"])
    assert text.splitlines() == ["Hint: Please answer the question and provide the correct option letter, e.g., A, B, "
                                 "C, D, at the end.", "Question: Find the measure of angle H.", "Choices:", "(A) 97",
                                 "(B) 102", "(C) 107", "(D) 122"]
    assert "(Unit: m/s^2)" in bench.prompt(p["1"]) and "one decimal place" in bench.prompt(p["1"])
    row = json.loads((FIXTURES / "mathvista_testmini.json").read_text())["3"]
    assert bench.prompt(bench.problem({**row, "query": "Q as released"}, 0, "testmini")) == "Q as released"
    assert "The answer to this problem is" in bench.prompt(p["2"], "ours")


def test_mathvista_categories_follow_the_release_axes(vista):
    bench, p = vista
    assert bench.axes[:3] == ("question_type", "answer_type", "language")
    cats = bench.categories(p["1"])
    assert cats["skills"] == ["scientific reasoning", "arithmetic reasoning"] and cats["grade"] == "college"


def test_mathverse_reads_the_options_from_the_question_text(releases):
    bench, problems, bad = load_benchmark("mathverse", releases["mathverse"])
    assert bad == []
    by = {p.id: p for p in problems}
    assert by["11"].choices == ("40°", "50°", "130°", "140°")
    assert bench.score(by["11"], "The angle is 130°.").correct is True  # by value, through the options
    assert bench.score(by["11"], "C").correct is True
    assert by["15"].choices is None  # Vision Only: the options are in the image; the letter alone counts
    assert bench.score(by["15"], "The answer is C.").correct is True
    assert bench.score(by["15"], "130°").correct is False
    # gold "$A=12.57 \mathrm{~cm}^{2}$": an equation's right side, with its unit
    assert bench.score(by["22"], "The area is $\\boxed{12.57 \\text{ cm}^2}$.").correct is True
    assert bench.prompt(by["11"]).startswith("Please directly answer")  # query_wo: the release's primary metric
    assert bench.prompt(by["11"], "cot").startswith("Please first conduct reasoning")
    assert bench.categories(by["21"]) == {"problem_version": "Text Lite", "subject": "Solid Geometry",
                                          "subfield": "Length"}


def test_mathvision_letters_values_and_two_decimals(releases):
    bench, problems, _ = load_benchmark("mathvision", releases["mathvision"])
    by = {p.id: p for p in problems}
    assert bench.score(by["3"], "$\\boxed{\\textbf{(B) } 2}$").correct is True
    assert bench.score(by["3"], "the area is \\boxed{2}").correct is True  # the option's value
    assert bench.score(by["2"], "\\boxed{C}").correct is True
    s = bench.score(by["4"], "\\boxed{0.3751}")  # the release compares numbers rounded to 2 decimals
    assert (s.correct, s.reason) == (True, "precision")
    assert bench.score(by["4"], "\\boxed{0.39}").correct is False
    # Options that are only letters are in the image: the prompt does not list them.
    assert "(A) A" not in bench.prompt(by["2"]) and "(C) $\\frac{1}{2}$" in bench.prompt(by["3"])
    assert bench.prompt(by["1"]).startswith('Please solve the problem step by step and put your answer in one "\\boxed{}"')
    assert bench.categories(by["3"]) == {"subject": "metric geometry - area", "level": "level3"}


def test_gsm8k_and_math500(releases):
    bench, problems, bad = load_benchmark("gsm8k", releases["gsm8k"])
    assert [p.gold for p in problems] == ["31", "2400", "49"] and bad == []
    assert bench.score(problems[1], "So they sell \\boxed{2,400} apples.").correct is True
    assert bench.prompt(problems[0]).endswith("put your final answer within \\boxed{}.")
    bench, problems, _ = load_benchmark("math500", releases["math500"])
    assert problems[0].id == "test/prealgebra/1.json"
    assert bench.score(problems[0], "\\boxed{5/6}").correct is True
    assert bench.categories(problems[2]) == {"subject": "Algebra", "level": "Level 2"}


def test_helpers():
    assert chosen_option("I pick (C).", ["1", "2", "3"])[0] == 2
    assert chosen_option("A or B", ["1", "2"])[0] is None
    assert option_named("**(D)**", ["a", "b", "c", "d"]) == 3
    assert option_named("B: 60°", ["30°", "60°"]) == 1 and option_named("Because", ["x", "y"]) is None
    assert edit_distance("kitten", "sitting") == 3
    assert nearest_option("", ["long option", "no"]) == 1
    assert plain_number("$1,000") == 1000.0 and plain_number("3/4") is None and plain_number("12 cm") == 12.0


def test_an_option_named_in_text_the_verifier_refused_is_not_taken(vista):
    # Runaway output: "(C) 107" is followed by another prompt. Asked about option C the verifier refuses it
    # (hedged); the option it names must not be taken from the other options' verdicts either.
    bench, p = vista
    response = "The answer is (C) 107°.\nQuestion: What is the next angle?\nChoices:\n(A) 10\n(B) 20"
    s = bench.score(p["2"], response)
    assert s.reason == "nearest_option"
