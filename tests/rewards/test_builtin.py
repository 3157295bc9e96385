"""The built-in rewards (verifier, format) and the `mathse-rl rewards` listing."""

from __future__ import annotations

import json

import pytest

from mathse_rl.rewards import get_reward
from mathse_rl.types import RewardInput

def sample(response, gold="5", choices=None):
    return RewardInput(question="q", response=response, gold=gold, choices=choices)


def test_verifier_scores_right_wrong_and_leaves_out_missing_gold():
    outs = get_reward("verifier")([
        sample("2+3=5. The answer to this problem is 5."),
        sample("The answer to this problem is 6."),
        sample("The answer to this problem is 5.", gold=None),
        sample("The answer to this problem is 5.", gold="  "),
        sample(r"\boxed{14}", gold="C", choices=("10", "12", "14", "16")),
        sample("The answer to this problem is 5.", gold=r"\frac{"),  # unreadable gold
    ])
    assert [o.score for o in outs] == [1.0, 0.0, None, None, 1.0, None]
    assert outs[0].extras["pred"] == "5" and list(outs[0].extras) == ["pred", "reason"]
    assert outs[2].extras["reason"] == "no_gold"
    assert outs[4].extras["reason"] == "choice"


def test_verifier_matches_verify_on_each_sample():
    from mathse_rl.verify import verify

    cases = [("The answer to this problem is 1/2.", "0.5"), ("The answer to this problem is 3 cm.", "30 mm"),
             ("nothing here", "4"), ("The answer to this problem is x+1.", "1+x")]
    outs = get_reward("verifier")([sample(r, g) for r, g in cases])
    assert [o.score for o in outs] == [verify(r, g, strict=True).score for r, g in cases]  # a training reward
    lenient = get_reward("verifier", strict=False)([sample(r, g) for r, g in cases])
    assert [o.score for o in lenient] == [verify(r, g).score for r, g in cases]


@pytest.mark.parametrize("response, form, pred", [
    ("Step 1: ... The answer to this problem is 42.", "statement", "42"),
    (r"so $\boxed{7}$", "boxed", "7"),
    ("The answer is 42.", None, None),
    ("The answer to this problem is .", None, None),
    (r"\boxed{}", None, None),
])
def test_format_reward(response, form, pred):
    out = get_reward("format")([sample(response, gold=None)])[0]
    assert out.score == (1.0 if form else 0.0)  # needs no gold
    assert out.extras["form"] == form
    if pred is not None:
        assert out.extras["pred"] == pred


def test_format_reward_forms_are_configurable():
    only_boxed = get_reward("format", forms=["boxed"])
    assert only_boxed([sample("The answer to this problem is 3.")])[0].score == 0.0
    with pytest.raises(ValueError, match="unknown answer forms"):
        get_reward("format", forms=["latex"])


def test_cli_lists_rewards(capsys):
    from mathse_rl.cli import main

    assert main(["rewards", "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    names = {r["name"]: r for r in listing["rewards"]}
    assert names["verifier"]["extras"] == ["pred", "reason"] and names["verifier"]["async"] is False
    assert "format" in names
