"""A general key a user gives on the command line is never silently shadowed by a recipe's more specific
key: it wins (with a warning naming both) or the run stops before any work with a message naming both."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest

from mathse_rl.evolve.config import SHADOWS, ConfigError, load_config, step_budget

RECIPE = str(Path(__file__).parents[2] / "recipes" / "trl" / "tiny_cpu.yaml")
STAGES = ("m0", "r1", "r2", "final")


def budgets(cfg) -> dict[str, int]:
    return {s: step_budget(cfg.train, s) for s in STAGES}


def test_the_recipes_own_budgets_hold_without_overrides():
    assert budgets(load_config(RECIPE)) == {"m0": 150, "r1": 30, "r2": 30, "final": 30}


def test_a_command_line_max_steps_trains_every_stage_and_says_what_it_replaced(caplog):
    with caplog.at_level(logging.WARNING, logger="mathse_rl.evolve.config"):
        cfg = load_config(RECIPE, ["train.max_steps=300"])
    assert budgets(cfg) == {"m0": 300, "r1": 300, "r2": 300, "final": 300}
    [note] = [r.getMessage() for r in caplog.records]
    assert "train.max_steps=300 (overrides) replaces train.max_steps_m0=150" in note and RECIPE in note


def test_specific_keys_given_after_the_general_one_keep_their_value():
    cfg = load_config(RECIPE, ["train.max_steps=300", "train.max_steps_m0=500"])
    assert budgets(cfg) == {"m0": 500, "r1": 300, "r2": 300, "final": 300}
    # keyword fields come after the overrides: the same rule one layer further
    cfg = load_config(RECIPE, ["train.max_steps=300"], train={"max_steps_round": 7})
    assert budgets(cfg) == {"m0": 300, "r1": 7, "r2": 7, "final": 300}


def test_epochs_on_the_command_line_replace_every_step_budget():
    cfg = load_config(RECIPE, ["train.num_train_epochs=3"])
    assert cfg.train.max_steps == -1 and budgets(cfg) == dict.fromkeys(STAGES, -1)


def test_token_budgets_follow_generate_max_new_tokens():
    base = {"reflect": {"max_tokens": 64}, "eval": {"max_new_tokens": 64}}
    cfg = load_config(overrides=["generate.max_new_tokens=200"], defaults=base)
    assert cfg.reflect.max_tokens is None and cfg.eval.max_new_tokens is None


@pytest.mark.parametrize("overrides, defaults, names", [
    (["critic.backend=local", "critic.model=/ckpt/orm-b"], {"judge_options": {"backend": "local", "model": "/a"}},
     ("critic=", "judge_options=")),
    (["data.eval_fraction=0.1"], {"data": {"eval": "heldout.jsonl"}}, ("data.eval_fraction=0.1", "data.eval=")),
])
def test_a_general_key_that_cannot_win_stops_the_run_naming_both(overrides, defaults, names):
    with pytest.raises(ConfigError) as err:
        load_config(overrides=overrides, defaults=defaults)
    assert all(n in str(err.value) for n in names) and "\n" not in str(err.value)


def test_the_evolve_command_line_prints_the_budget_it_will_use(capsys):
    from mathse_rl.cli import main

    assert main(["evolve", "--config", RECIPE, "--print-config", "train.max_steps=300"]) == 0
    printed = capsys.readouterr().out
    assert re.search(r"max_steps: 300\n", printed) and re.search(r"max_steps_m0: null\n", printed)


def test_every_fallback_the_schema_declares_is_a_listed_pair():
    """A field whose comment says ``(None: <other key>)`` falls back to that key: it must be in SHADOWS."""
    import mathse_rl.evolve.config as config_module

    keys = set(config_module.config_keys())
    source = Path(config_module.__file__).read_text()
    listed = {(s.general, k) for s in SHADOWS for k in s.specific}
    section = ""
    found = []
    for line in source.splitlines():
        if m := re.match(r"class (\w+)Config\b", line):
            section = {"Data": "data", "Generate": "generate", "Reflect": "reflect", "Pool": "pool",
                       "Train": "train", "Eval": "eval", "Evolve": ""}.get(m.group(1), m.group(1).lower())
        if m := re.match(r"\s+(\w+): .*#.*\bNone: ([a-z_.]+)", line):
            named = m.group(2).rstrip(".")
            general = named if named in keys else f"{section}.{named}".strip(".")
            if general in keys:  # "(None: all)", "(None: no cap)" are no fallbacks
                found.append((general, f"{section}.{m.group(1)}".strip(".")))
    assert found and set(found) <= listed, set(found) - listed


def test_a_served_orm_may_send_the_runs_own_images_and_the_datas(tmp_path):
    # A served ORM refuses image files outside image_dirs; the loop saves in-memory images under
    # <output_dir>/images, so a run whose critic/judge is served must allow that folder and the data's.
    from mathse_rl.evolve.config import load_config, step_config

    data = tmp_path / "data"
    data.mkdir()
    (data / "train.jsonl").write_text("")
    cfg = load_config(overrides=[f"output_dir={tmp_path / 'run'}", f"data.train={data / 'train.jsonl'}",
                                 "judge=orm", "critic.backend=openai", "critic.endpoint=http://127.0.0.1:1/v1"])
    step = step_config(cfg)
    want = sorted([str(tmp_path / "run" / "images"), str(data)])
    assert sorted(step.critic["image_dirs"]) == want
    bench = tmp_path / "mathvista"
    bench.mkdir()
    (bench / "testmini.json").write_text("{}")
    ref = load_config(overrides=[f"output_dir={tmp_path / 'run'}", "critic.backend=openai",
                                 f"data.eval=mathvista:testmini:{bench / 'testmini.json'}"])
    assert str(bench) in step_config(ref).critic["image_dirs"]  # a benchmark reference counts by its file
    given = load_config(overrides=[f"output_dir={tmp_path / 'run'}", "critic.backend=openai",
                                   "critic.image_dirs=[/srv/images]"])
    assert step_config(given).critic["image_dirs"] == ["/srv/images"]  # given folders are kept as they are
