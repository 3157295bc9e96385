"""Teacher solutions, injected errors with a known first wrong step, and the exact step checker."""

from __future__ import annotations

import random

import pytest

from mathse_rl.data import teacher
from mathse_rl.data.synthetic import make_problem, make_split
from mathse_rl.prompts import ANSWER_PHRASE
from mathse_rl.types import Judgment


@pytest.fixture(scope="module")
def problems():
    return make_split("train", 120, seed=0)


def test_teacher_solution_reads_then_combines_and_ends_with_the_answer_sentence():
    p = make_problem(0, "train", seed=0, level=1)
    red, blue = p.meta["heights"]
    sol = teacher.teacher_solution(p)
    lines = sol.splitlines()
    assert lines[0] == f"Step 1: The red bar is {red}."
    assert lines[1] == f"Step 2: The blue bar is {blue}."
    assert lines[2] == f"Step 3: {red} + {blue} = {red + blue}."
    assert lines[-1] == f"{ANSWER_PHRASE} {p.gold}."


def test_teacher_solutions_pass_the_checker(problems):
    for p in problems:
        chk = teacher.check_steps(p, teacher.teacher_solution(p))
        assert chk.all_correct and chk.first_wrong_step is None and all(chk.labels)
        assert teacher.extract_answer(teacher.teacher_solution(p)) == p.gold


@pytest.mark.parametrize("kind", teacher.ERROR_KINDS)
def test_injected_error_is_found_at_its_first_wrong_step(problems, kind):
    rng = random.Random(0)
    for p in problems:
        wrong = teacher.inject_error(p, kind, rng)
        assert wrong is not None
        chk = teacher.check_steps(p, wrong.response)
        assert not chk.answer_correct
        assert chk.first_wrong_step == wrong.first_wrong_step
        assert all(chk.labels[: wrong.first_wrong_step - 1])
        assert not chk.labels[wrong.first_wrong_step - 1]


def test_error_kinds_are_what_they_say():
    p = make_problem(1, "train", seed=0, level=3)
    rng = random.Random(1)
    mis = teacher.inject_error(p, "misread", rng)
    assert mis.first_wrong_step <= 3 and "misreads" in mis.analysis
    op = teacher.inject_error(p, "operation", rng)
    assert mis.first_wrong_step <= 3 and op.first_wrong_step in (4, 5)
    line = op.response.splitlines()[op.first_wrong_step - 1]
    expected_op = p.meta["ops"][op.first_wrong_step - 4]
    assert (" - " if expected_op == "+" else " + ") in line


def test_checker_catches_right_answer_with_wrong_steps():
    p = next(q for q in make_split("train", 20, seed=0, level=1) if len(set(q.meta["heights"])) == 2)
    red, blue = p.meta["heights"]
    lucky = (f"Step 1: The red bar is {blue}.\nStep 2: The blue bar is {red}.\n"
             f"Step 3: {blue} + {red} = {red + blue}.\n{ANSWER_PHRASE} {red + blue}.")
    chk = teacher.check_steps(p, lucky)
    assert chk.answer_correct and not chk.all_correct and chk.first_wrong_step == 1


def test_checker_on_garbage_missing_and_extra_steps():
    p = make_problem(3, "train", seed=0, level=2)
    assert teacher.check_steps(p, "").first_wrong_step == 1
    assert teacher.check_steps(p, "blah").all_correct is False
    sol = teacher.teacher_solution(p).splitlines()
    truncated = "\n".join(sol[:2] + sol[-1:])
    assert teacher.check_steps(p, truncated).first_wrong_step == 3
    extra = "\n".join(sol[:-1] + [f"Step {len(sol)}: The red bar is 1."] + sol[-1:])
    assert teacher.check_steps(p, extra).first_wrong_step == len(sol)


def test_exact_judgment_matches_the_injector(problems):
    rng = random.Random(2)
    p = problems[0]
    assert teacher.exact_judgment(p, teacher.teacher_solution(p)).status == "CORRECT"
    wrong = teacher.inject_error(p, "arithmetic", rng)
    j = teacher.exact_judgment(p, wrong.response)
    assert j.status == "WRONG" and j.error_step == wrong.first_wrong_step
    assert "miscalculates" in j.error_analysis and p.gold not in j.error_analysis.split()


def test_teacher_reflection_is_right_only_when_the_critique_is(problems):
    rng = random.Random(3)
    fixed = stayed_wrong = 0
    for p in problems:
        wrong = teacher.inject_error(p, rng.choice(teacher.ERROR_KINDS), rng)
        good = teacher.exact_judgment(p, wrong.response)
        assert teacher.check_steps(p, teacher.teacher_reflect(p, wrong.response, good)).all_correct
        fixed += 1
        n = teacher.check_steps(p, wrong.response).n_expected
        if wrong.first_wrong_step < n:  # a critique pointing too late keeps the real mistake
            late = Judgment(status="WRONG", error_step=wrong.first_wrong_step + 1)
            assert not teacher.check_steps(p, teacher.teacher_reflect(p, wrong.response, late)).all_correct
            stayed_wrong += 1
    assert fixed == len(problems) and stayed_wrong > 0


def test_sft_example_is_trl_conversational():
    p = make_problem(4, "train", seed=0)
    ex = teacher.sft_example(p, teacher.teacher_solution(p))
    assert ex["prompt"][0]["content"][0] == {"type": "image"}
    assert ex["completion"][0]["role"] == "assistant" and len(ex["images"]) == 1
    att = teacher.teacher_attempt(p)
    assert att.source == "distilled" and att.correct


def test_the_project_verifier_agrees_with_the_teacher_and_the_injector(problems):
    from mathse_rl.verify import verify

    rng = random.Random(4)
    for p in problems[:40]:
        assert verify(teacher.teacher_solution(p), p.gold, choices=p.choices).correct
        wrong = teacher.inject_error(p, rng.choice(teacher.ERROR_KINDS), rng)
        assert not verify(wrong.response, p.gold, choices=p.choices).correct
