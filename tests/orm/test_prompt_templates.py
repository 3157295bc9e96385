"""The compact judge prompt: opt-in for tiny judges, used alike in training data and by the backends."""

from __future__ import annotations

import pytest

from mathse_rl.orm import build_judge_prompt, judge_config, load_judge
from mathse_rl.orm.backends.openai import build_request
from mathse_rl.orm.data import build_orm_dataset
from mathse_rl.orm.prompts import JUDGE_TEMPLATE
from mathse_rl.orm.toy import toy_rollouts
from mathse_rl.types import RewardInput

RESPONSE = "Step 1: The red bar is 5.\nStep 2: 5 + 7 = 13.\nThe answer to this problem is 13."


def test_compact_prompt_ends_with_the_reference_and_keeps_numbered_steps():
    full = build_judge_prompt("What is the sum?", RESPONSE, "12")
    compact = build_judge_prompt("What is the sum?", RESPONSE, "12", template="compact")
    assert "Step 2: 5 + 7 = 13." in compact and "Problem: What is the sum?" in compact
    assert compact.endswith("Reference answer: 12")
    assert "strict mathematics teacher" in full and "strict mathematics teacher" not in compact
    assert len(compact) < len(full) / 2
    with pytest.raises(ValueError, match="unknown judge prompt template"):
        build_judge_prompt("q", RESPONSE, "12", template="short")


def test_dataset_and_backends_follow_the_template_and_default_to_full(tiny_vlm_path):
    rows = toy_rollouts(8, seed=0)
    default = build_orm_dataset(rows, test_fraction=0.0, seed=0)
    compact = build_orm_dataset(rows, test_fraction=0.0, seed=0, template="compact")
    text = lambda r: r["prompt"][0]["content"][-1]["text"] if isinstance(r["prompt"][0]["content"], list) \
        else r["prompt"][0]["content"]
    assert all("strict mathematics teacher" in text(r) for r in default.train)
    assert all(text(r).startswith("Grade the solution.") for r in compact.train)
    assert [r["completion"] for r in compact.train] == [r["completion"] for r in default.train]

    assert judge_config().prompt_template == "full"
    with pytest.raises(ValueError, match="prompt_template"):
        judge_config(prompt_template="nope")
    item = RewardInput(question="What is the sum?", response=RESPONSE, gold="12")
    judge = load_judge({"backend": "local", "model": tiny_vlm_path, "prompt_template": "compact"})
    prompt, _ = judge._prompt(item)
    assert "Reference answer: 12" in prompt and "strict mathematics teacher" not in prompt
    body = build_request(item, judge_config(backend="openai", model="m", prompt_template="compact"))
    assert body["messages"][0]["content"].startswith("Grade the solution.")
    body = build_request(item, judge_config(backend="openai", model="m"))
    assert body["messages"][0]["content"].startswith(JUDGE_TEMPLATE.split("\n")[0])


def test_step_label_format_keeps_status_and_first_wrong_step_only():
    from mathse_rl.orm import Judgment, parse_judgment, render_judgment

    wrong = Judgment(status="WRONG", error_step=2, error_analysis="5 + 7 is 12.", improvement_suggestion="Redo it.")
    text = render_judgment(wrong, "step")
    assert text == '{"status": "WRONG", "error_step": 2}'
    back = parse_judgment(text)
    assert back.status == "WRONG" and back.error_step == 2
    assert render_judgment(Judgment(status="CORRECT"), "step") == '{"status": "CORRECT", "error_step": null}'
