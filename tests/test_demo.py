"""`mathse-rl demo --quick` end to end on the project's own parts: the evolve loop with trl's
SFTTrainer backend and the hf generator, the teacher behind its OpenAI-compatible endpoint
(reflect.refiner=openai), the ORM trained with trl, the online recipe (trl GRPOTrainer and
MathSETrainer reflecting through the same endpoint), and every artefact."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from mathse_rl.demo import build_world_model


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    import logging

    from mathse_rl.cli import main

    out = tmp_path_factory.mktemp("demo") / "run"
    records: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(record.getMessage())

    handler = Keep(level=logging.WARNING)
    logging.getLogger("mathse_rl.evolve.config").addHandler(handler)
    try:
        # A user's general budget on the command line, where the demo sets per-stage budgets beneath it.
        assert main(["demo", "--quick", "--out", str(out), "train.max_steps=2"]) == 0
    finally:
        logging.getLogger("mathse_rl.evolve.config").removeHandler(handler)
    return out, records


@pytest.mark.slow
def test_quick_demo_writes_every_arm_table_json_plot_and_wandb(quick_run):
    from PIL import Image

    out, _ = quick_run
    table = (out / "demo_table.md").read_text()
    for title in ("distillation only", "rejection sampling only", "MathSE offline", "GRPO online", "MathSE online"):
        assert title in table
    assert "| M0 (distilled on 4 teacher paths)" in table and "| round 1 |" in table
    assert "ORM on held-out paths" in table

    data = json.loads((out / "demo_results.json").read_text())
    assert set(data["arms"]) == {"rs", "mathse", "distill", "grpo", "mathse_grpo"}
    for arm in ("rs", "mathse", "distill"):
        assert [r["stage"] for r in data["arms"][arm]] == ["M0", "round 1"]
    for arm in ("grpo", "mathse_grpo"):
        assert [r["stage"] for r in data["arms"][arm]] == ["M0", "1 steps"]
    for rows in data["arms"].values():
        for r in rows:  # held-out accuracy per stage, lenient and strict
            assert 0.0 <= r["heldout_accuracy"] <= 1.0 and 0.0 <= r["heldout_strict_accuracy"] <= 1.0
    assert data["seeds"]["world"] == 0 and data["wall_time_s"] > 0 and "arm mathse" in data["timings_s"]
    assert data["orm"]["report"]["n"] > 0
    with Image.open(out / "heldout_accuracy.png") as img:
        img.verify()
    runs = list((out / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and any(runs[0].rglob("*.wandb"))


@pytest.mark.slow
def test_quick_demo_runs_on_the_trl_backend_and_the_teacher_endpoint(quick_run):
    import yaml

    out, _ = quick_run
    data = json.loads((out / "demo_results.json").read_text())
    for arm in ("m0", "rs", "mathse"):
        cfg = yaml.safe_load((out / ("m0" if arm == "m0" else f"arms/{arm}") / "config.yaml").read_text())
        assert cfg["train"]["backend"] == "sft" and cfg["generate"]["backend"] == "hf"
        stages = [json.loads(line)["stage"] for line in
                  (out / ("m0" if arm == "m0" else f"arms/{arm}") / "stages.jsonl").read_text().splitlines()]
        assert "distill.eval" in stages
    # trl's SFTTrainer (SFTBackend) leaves its training record next to each checkpoint
    assert (out / "m0" / "checkpoints" / "m0" / "mathse_train.json").exists()
    assert (out / "arms" / "rs" / "checkpoints" / "r1" / "mathse_train.json").exists()
    mathse = yaml.safe_load((out / "arms" / "mathse" / "config.yaml").read_text())
    assert mathse["reflect"]["refiner"] == "openai"
    assert mathse["reflect"]["openai"]["base_url"] == data["teacher"]["endpoint"]
    assert mathse["reflect"]["openai"]["base_url"].startswith("http://127.0.0.1:")
    assert data["teacher"]["requests"] > 0
    # the teacher's reflections were re-judged and verified offline and online
    assert any(r.get("reflections_accepted") for r in data["arms"]["mathse"][1:])
    assert data["arms"]["mathse_grpo"][-1]["verified_refinements"] > 0
    assert "r1.reflect" not in (out / "arms" / "rs" / "stages.jsonl").read_text()
    online = data["arm_configs"]["mathse_grpo"]
    assert "recipes/trl/mathse_grpo.py" in online and "--reflect_refiner openai" in online
    assert "--trainer grpo" in data["arm_configs"]["grpo"]
    assert (out / "models" / "orm" / "orm_train.json").exists()


@pytest.mark.slow
def test_a_shadowed_max_steps_override_is_honoured_and_said(quick_run):
    """The demo sets train.max_steps_m0/round beneath the user's train.max_steps=2: the user's budget
    trains every stage, and a warning names both keys."""
    out, records = quick_run
    m0 = json.loads((out / "m0" / "checkpoints" / "m0" / "mathse_train.json").read_text())
    r1 = json.loads((out / "arms" / "rs" / "checkpoints" / "r1" / "mathse_train.json").read_text())
    assert m0["steps"] == 2 and r1["steps"] == 2  # the demo's quick budgets are 1 step each
    assert any("train.max_steps=2 (overrides) replaces train.max_steps_m0=1" in r for r in records)


def test_demo_holds_no_training_loop_generate_function_or_trainer_backend():
    import inspect

    import mathse_rl.demo

    source = inspect.getsource(mathse_rl.demo)
    for pattern in (r"\.backward\(", r"torch\.optim", r"\.step\(\)", r"def generate\b", r"model\.generate\(", r"register_trainer",
                    r"class \w*Trainer\b", r"def train_steps", r"class Encoder", r"def refine\("):
        assert not re.search(pattern, source), pattern


def test_demo_refuses_to_delete_a_folder_it_did_not_write(tmp_path):
    from mathse_rl.cli import main

    (tmp_path / "precious.txt").write_text("keep me")
    with pytest.raises(SystemExit, match="not a demo folder"):
        main(["demo", "--quick", "--out", str(tmp_path)])
    assert (tmp_path / "precious.txt").exists()


def test_demo_refuses_a_bad_override_before_any_work(tmp_path):
    from mathse_rl.cli import main

    with pytest.raises(SystemExit, match="train.max_stepz"):
        main(["demo", "--quick", "--out", str(tmp_path / "x"), "train.max_stepz=3"])
    assert not (tmp_path / "x").exists()


def test_plot_legend_covers_no_point_and_the_x_axis_has_a_title():
    import matplotlib.pyplot as plt

    from mathse_rl.demo import DemoConfig
    from mathse_rl.demo_report import ARM_TITLES, _figure

    cfg = DemoConfig(rounds=2)
    # Points in every corner of the axes, where a legend inside them would land.
    ys = ([0.0, 0.5, 1.0], [1.0, 0.5, 0.0], [0.98, 0.02, 0.97], [0.0, 1.0], [1.0, 0.01])
    results = {arm: [{"heldout_accuracy": y} for y in arm_ys] for arm, arm_ys in zip(ARM_TITLES, ys)}
    fig = _figure(cfg, results)
    fig.canvas.draw()
    ax = fig.axes[0]
    assert ax.get_xlabel()
    box = ax.get_legend().get_window_extent()
    for line in ax.get_lines():
        for x, y in ax.transData.transform(line.get_xydata()):
            assert not box.contains(x, y), (line.get_label(), x, y)
    plt.close(fig)


def _payload(seed: int, finals: dict[str, float]) -> dict:
    arms = {a: [{"stage": "M0", "heldout_accuracy": 0.3, "heldout_strict_accuracy": 0.3},
                {"stage": "round 2", "heldout_accuracy": v, "heldout_strict_accuracy": v}] for a, v in finals.items()}
    return {"config": {"seed": seed}, "arms": arms, "wall_time_s": 600.0, "load_average": [2.0, 2.0, 2.0]}


def test_seed_table_claims_mathse_over_rs_only_where_the_spread_allows():
    from mathse_rl.demo_report import seed_table

    clear = [_payload(s, {"rs": 0.40 + 0.01 * s, "mathse": 0.50 + 0.01 * s}) for s in range(3)]
    text, data = seed_table(clear)
    assert data["claims"]["mathse>rs"]["claimed"] and "claimed" in text
    assert "mean ± sd" in text and "| seed 0 | seed 1 | seed 2 |" in text
    noisy = [_payload(0, {"rs": 0.40, "mathse": 0.55}), _payload(1, {"rs": 0.50, "mathse": 0.45}),
             _payload(2, {"rs": 0.40, "mathse": 0.42})]
    text, data = seed_table(noisy)
    assert not data["claims"]["mathse>rs"]["claimed"] and "within the seed spread, no claim" in text
    cell = next(c for c in data["cells"] if c["arm"] == "mathse" and c["stage"] == "round 2")
    assert cell["lenient"] == [0.55, 0.45, 0.42] and abs(cell["mean"] - 0.4733) < 1e-3


def test_world_model_tokenizer_knows_the_world(tmp_path):
    from mathse_rl.data import synthetic, teacher
    from mathse_rl.models.tiny import load_processor

    path = build_world_model(tmp_path / "m", "vlm", "XS", seed=0)
    tok = load_processor(path).tokenizer
    p = synthetic.make_problem(0, "train", seed=0, level=1)
    solution = teacher.teacher_solution(p)
    assert len(tok(solution)["input_ids"]) < len(solution) / 2  # world words are a token or two each
