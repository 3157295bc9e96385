"""Step segmentation is deterministic and the judge prompt shows the steps numbered."""

from __future__ import annotations

import pytest

from mathse_rl.orm import (
    Judgment,
    build_judge_messages,
    number_steps,
    parse_judgment,
    render_judgment,
    segment_steps,
)


@pytest.mark.parametrize("text, expected", [
    ("Step 1: a = 2.\nStep 2: b = 3.\nStep 3: a + b = 5.\nThe answer to this problem is 5.",
     ["a = 2.", "b = 3.", "a + b = 5.\nThe answer to this problem is 5."]),
    ("First look.\nStep 1: a = 2.\nStep 2: b = 3.", ["First look.\na = 2.", "b = 3."]),
    ("**Step 1.** read\n\n**Step 2:** add", ["read", "add"]),
    ("### Step 1 - read the bars\nstep 2) add them", ["read the bars", "add them"]),
    ("Read the bars.\n\nAdd them: 5 + 7 = 12.\n\nThe answer to this problem is 12.",
     ["Read the bars.", "Add them: 5 + 7 = 12.", "The answer to this problem is 12."]),
    ("a = 2\nb = 3", ["a = 2", "b = 3"]),
    ("The bar is 3.5 units. So it is 3.5. The answer to this problem is 3.5.",
     ["The bar is 3.5 units.", "So it is 3.5.", "The answer to this problem is 3.5."]),
    ("", []),
    ("   \n  ", []),
    ("just one sentence", ["just one sentence"]),
])
def test_segment_steps(text, expected):
    assert segment_steps(text) == expected
    assert segment_steps(text) == segment_steps(text)  # deterministic


def test_numbered_steps_in_the_prompt_and_images_first():
    response = "Step 1: The red bar is 5.\nStep 2: 5 + 7 = 13.\nThe answer to this problem is 13."
    msgs = build_judge_messages("What is the sum?", response, "12", choices=["12", "13"], n_images=2)
    parts = msgs[0]["content"]
    assert [p["type"] for p in parts] == ["image", "image", "text"]
    text = parts[-1]["text"]
    assert "Step 1: The red bar is 5.\nStep 2: 5 + 7 = 13." in text
    assert "Reference answer: 12" in text and "Options: A. 12  B. 13" in text
    assert '"status"' in text and '"error_step"' in text and "the image" in text
    text_only = build_judge_messages("q", "x = 1.", None)[0]["content"]
    assert isinstance(text_only, str) and "Reference answer: (not given)" in text_only


def test_rendered_target_round_trips_through_the_parser():
    steps = ["The red bar is 5.", "5 + 7 = 13."]
    target = Judgment(status="WRONG", error_step=2, error_analysis="5 + 7 is not 13.",
                      improvement_suggestion="Redo the addition.")
    back = parse_judgment(render_judgment(target), steps)
    assert (back.status, back.error_step, back.error_analysis, back.improvement_suggestion) == \
           ("WRONG", 2, "5 + 7 is not 13.", "Redo the addition.")
    assert back.error_step_text == "Step 2: 5 + 7 = 13." and back.parse_error is None
    assert render_judgment(target, "binary") == '{"status": "WRONG"}'
    assert render_judgment(Judgment(status="CORRECT", error_step=3)).startswith(
        '{"status": "CORRECT", "error_step": null')
    with pytest.raises(ValueError, match="label_format"):
        render_judgment(target, "verbose")
    assert number_steps(steps) == "Step 1: The red bar is 5.\nStep 2: 5 + 7 = 13."
