"""The judge-output parser repairs common damage and reports, never guesses, what it cannot read."""

from __future__ import annotations

import pytest

from mathse_rl.orm import parse_judgment, parse_judgment_report

STEPS = ["The red bar is 5.", "The blue bar is 8.", "5 + 8 = 13.", "The answer to this problem is 13."]

# (raw reply, status, error_step)
READABLE = [
    ('{"status": "CORRECT", "error_step": null, "error_analysis": "", "improvement_suggestion": "none"}', "CORRECT", None),
    ('{"status": "WRONG", "error_step": 2, "error_analysis": "blue is 7", "improvement_suggestion": "re-read"}', "WRONG", 2),
    ('```json\n{"status": "WRONG", "error_step": 3, "error_analysis": "x"}\n```', "WRONG", 3),
    ('Sure! Here is my verdict:\n{"status": "WRONG", "error_step": 1}\nHope this helps.', "WRONG", 1),
    ("{'status': 'WRONG', 'error_step': 2, 'error_analysis': \"the student's reading\"}", "WRONG", 2),
    ("{'status': 'CORRECT', 'error_step': None, 'improvement_suggestion': 'fine',}", "CORRECT", None),
    ('{status: WRONG, error_step: 4}', "WRONG", 4),
    ('{"status": "WRONG", "error_step": "Step 2", "error_analysis": "misread"}', "WRONG", 2),
    ('{"status": "WRONG", "error_step": "Steps 2 and 3: both misread", "error_analysis": "x"}', "WRONG", 2),
    ('{"status": "WRONG", "error_step": "3", "error_analysis": "x"}', "WRONG", 3),
    ('{"status": "WRONG", "error_step": 2.0}', "WRONG", 2),
    ('{"Status": "Incorrect", "Error Step": 1, "Error Analysis": "x"}', "WRONG", 1),
    ('{"status": "correct"}', "CORRECT", None),
    ('{"status": "WRONG", "error_step": 2, "error_analysis": "The blue bar is read as', "WRONG", 2),  # cut off
    ('status: WRONG\nerror_step: 3\nerror_analysis: "slip"', "WRONG", 3),
    ('{"note": "first"} {"status": "WRONG", "error_step": 1}', "WRONG", 1),
    ('{"status": "WRONG", "error_step": 2, "error_analysis": "uses {braces} and \\"quotes\\""}', "WRONG", 2),
]


@pytest.mark.parametrize("raw, status, step", READABLE)
def test_readable_replies(raw, status, step):
    j = parse_judgment(raw, STEPS)
    assert j.parse_error is None, j
    assert (j.status, j.error_step) == (status, step)
    assert j.score == (1.0 if status == "CORRECT" else 0.0)
    assert j.raw == raw


@pytest.mark.parametrize("raw, why", [
    ("", "no status"),
    (None, "no status"),
    ("The solution looks correct to me.", "no status"),  # a bare word is not a status field
    ("CORRECT", "no status"),
    ('{"error_step": 2, "error_analysis": "x"}', "no status"),
    ('{"status": "MAYBE", "error_step": 2}', "not a clean CORRECT or WRONG"),
    ('{"status": 1}', "not a clean CORRECT or WRONG"),
    ("[1, 2, 3]", "no status"),
])
def test_unreadable_replies_are_reported_not_guessed(raw, why):
    j = parse_judgment(raw, STEPS)
    assert j.parse_error is not None and why in j.parse_error
    assert j.status == "WRONG" and j.score == 0.0  # an unread reply never passes


@pytest.mark.parametrize("raw, note", [
    ('{"status": "WRONG", "error_step": 9, "error_analysis": "x", "improvement_suggestion": "y"}', "outside 1..4"),
    ('{"status": "WRONG", "error_step": 0, "error_analysis": "x", "improvement_suggestion": "y"}', "outside"),
    ('{"status": "WRONG", "error_step": "the last one", "error_analysis": "x", "improvement_suggestion": "y"}',
     "names no step number"),
    ('{"status": "WRONG", "error_analysis": "x", "improvement_suggestion": "y"}', "error_step missing"),
    ('{"status": "WRONG", "error_step": 2, "improvement_suggestion": "y"}', "error_analysis missing"),
])
def test_partial_replies_keep_the_status_and_list_the_gaps(raw, note):
    report = parse_judgment_report(raw, STEPS)
    assert report.ok and report.judgment.status == "WRONG"
    assert any(note in n for n in report.notes), report.notes
    if "outside" in note or "no step" in note or "missing" in note and "error_step" in note:
        assert report.judgment.error_step is None


def test_step_text_comes_from_the_solution_and_correct_has_no_step():
    j = parse_judgment('{"status": "WRONG", "error_step": 3}', STEPS)
    assert j.error_step_text == "Step 3: 5 + 8 = 13."
    j = parse_judgment('{"status": "CORRECT", "error_step": 2}', STEPS)
    assert j.error_step is None and j.correct
    # without the steps, any positive index is accepted
    assert parse_judgment('{"status": "WRONG", "error_step": 12}').error_step == 12


# --- hostile and ambiguous replies -------------------------------------------------------------

@pytest.mark.parametrize("raw", ["{" * 400_000, "{" * 1_000_000, "{'a" * 300_000, '{"status": ' * 100_000,
                                 "error_step: " * 100_000, "{}" * 300_000, "{'status': 'x' " + "a " * 300_000])
def test_hostile_text_parses_in_linear_time(raw):
    import time

    start = time.perf_counter()
    j = parse_judgment(raw)
    # A generous bound: the quadratic reader took 13.8 s on 400k braces; a linear one takes well under 1 s.
    assert time.perf_counter() - start < 2.0
    assert j.status == "WRONG" and j.parse_error is not None


@pytest.mark.parametrize("raw", [
    "Status: Correct? No. status: WRONG",
    'The reply format is {"status": "CORRECT"}. My verdict: {"status": "WRONG", "error_step": 2}',
    'Expected output like {"status": "CORRECT", "error_step": null}.\nstatus: WRONG\nerror_step: 3',
    'status: WRONG at first glance, but re-checking: {"status": "CORRECT"}',
    '{"status": "WRONG", "error_step": 1, "error_analysis": "the student wrote status: CORRECT"}',
])
def test_verdicts_that_disagree_are_not_read(raw):
    # (these once went to the last verdict; a judge that revises itself is ambiguous: the fallback decides)
    j = parse_judgment(raw, STEPS)
    assert j.parse_error is not None and j.status == "WRONG" and j.score == 0.0, j


def test_a_quoted_verdict_is_told_apart_by_the_judged_response():
    raw = '{"status": "WRONG", "error_step": 1, "error_analysis": "the student wrote status: CORRECT"}'
    report = parse_judgment_report(raw, STEPS, response="Step 1: The red bar is 6. status: CORRECT")
    assert report.ok and report.judgment.status == "WRONG" and report.judgment.error_step == 1
    assert report.copied == 1 and any("copied" in n for n in report.notes)


@pytest.mark.parametrize("value, step", [
    ("第3步", 3), ("第 2 步", 2), ("第三步", 3), ("步骤4", 4), ("步骤 1：读错了", 1), ("Step #2", 2),
    ("#3", 3), ("the 2nd step", 2), ("third step", 3), ("(4)", 4), ("S2", 2),
])
def test_step_numbers_in_the_forms_judges_write(value, step):
    raw = '{"status": "WRONG", "error_step": "%s", "error_analysis": "x"}' % value
    assert parse_judgment(raw, STEPS).error_step == step
    assert parse_judgment("status: WRONG\nerror_step: %s\n" % value, STEPS).error_step == step
