"""One gold-column rule, per row, for the evolve loader and the trl rewards."""

from __future__ import annotations

import json

from mathse_rl.data.loaders import GOLD_COLUMNS, gold_of, load_problems
from mathse_rl.integrations.trl.rewards import make_reward_func, verifier

RIGHT = "5 + 7 = 12. The answer to this problem is 12."
ROWS = [
    {"id": "worked", "question": "5 + 7?", "solution": "5 + 7 = \\boxed{12}", "answer": "12"},
    {"id": "only_solution", "question": "5 + 7?", "solution": "12"},
    {"id": "blank_answer", "question": "5 + 7?", "answer": "", "solution": "12"},
]


def test_a_row_with_a_worked_solution_and_an_answer_is_checked_against_the_answer():
    assert GOLD_COLUMNS[0] == "answer" and GOLD_COLUMNS[-1] == "solution"
    assert [gold_of(r) for r in ROWS] == ["12", "12", "12"]


def test_trl_rewards_apply_the_rule_per_row():
    # trl passes each dataset column as a list; here a batch mixes the three kinds of rows
    columns = {"solution": [r.get("solution") for r in ROWS], "answer": [r.get("answer") for r in ROWS]}
    assert verifier(prompts=["5 + 7?"] * 3, completions=[RIGHT] * 3, **columns) == [1.0, 1.0, 1.0]


def test_trl_rewards_take_the_columns_to_read():
    f = make_reward_func("verifier", gold_column=["solution"])
    assert f(prompts=["q"], completions=[RIGHT], solution=["12"], answer=["13"]) == [1.0]


def test_evolve_loader_applies_the_same_rule_and_reads_gold_columns(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    problems, bad = load_problems(path)
    assert bad == [] and [p.gold for p in problems] == ["12", "12", "12"]
    only_solution, bad = load_problems(path, gold_columns=["solution"])
    assert [p.gold for p in only_solution] == ["5 + 7 = \\boxed{12}", "12", "12"] and bad == []


def test_evolve_recipe_names_the_gold_columns():
    from mathse_rl.evolve import load_config

    assert load_config().data.gold_columns == list(GOLD_COLUMNS)
    assert load_config(overrides=["data.gold_columns=[ground_truth]"]).data.gold_columns == ["ground_truth"]
