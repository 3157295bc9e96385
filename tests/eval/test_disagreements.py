"""The classes ``scripts/_disagreements.py`` gives a row where a release's label and ours differ."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

from _disagreements import classify, release_prediction  # noqa: E402


def _integer(e):
    return release_prediction(e, None, "free_form", "integer", None)


def _options(choices):
    return lambda e: release_prediction(e, choices, "multi_choice", "text", None)


def test_a_label_its_own_rule_contradicts_is_the_release_s():
    # MathVista's rule reads the extraction "18.0" as 18 for an integer answer: a label "wrong" does not follow
    assert classify("18.0", False, True, "18.0", "18.0", None, True, release_rule=_integer, gold="18") == "label"
    # the label that does follow from the extraction is no "label" row
    assert classify("17.0", False, True, "18", "18", None, True, release_rule=_integer, gold="18") != "label"


def test_other_classes():
    yes_no = ["Yes", "No"]
    rule = _options(yes_no)
    assert classify("A", True, False, None, "", yes_no, False, release_rule=rule, gold="Yes") == "empty"
    run_on = "I cannot tell.\n\nQuestion: Is 9 > 0?\nSolution: 9 > 0, so the answer is A) Yes"
    abc = ["7", "8", "9"]
    assert classify("9", True, False, None, run_on, abc, False, release_rule=_options(abc), gold="9") == "runaway"
    assert classify("8", True, False, "7", "The answer is 7.", abc, False, release_rule=_options(abc),
                    gold="8") == "not_in_response"
    # our reading is not what the release's rule gives for it: a difference of rule, never a release-side class
    assert classify("8", True, False, "8", "8", abc, True, release_rule=_options(abc), gold="8") == "rule"


def test_a_yes_no_question_s_extraction_must_be_in_the_reply_unless_it_is_yes_or_no():
    yes_no = ["Yes", "No"]
    rule = _options(yes_no)
    reply = "There are 2 buses and 3 trees, so the answer is:\n\nB) No"
    # "A" (yes) may be read from a reply that says no in other words: one side misread it
    assert classify("A", True, False, "B) No", reply, yes_no, False, release_rule=rule, gold="Yes") == "reading"
    # a number the reply never writes is no reading of it
    assert classify("105000", True, False, "B) No", reply, yes_no, False, release_rule=rule,
                    gold="Yes") == "not_in_response"
