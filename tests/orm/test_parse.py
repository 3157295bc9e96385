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
    ('{"status": "MAYBE", "error_step": 2}', "neither CORRECT nor WRONG"),
    ('{"status": 1}', "neither CORRECT nor WRONG"),
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
