"""`mathse-rl demo --quick` end to end: the real evolve loop with trl's SFTTrainer, the ORM
trained with trl, and every artefact (table, JSON, plot, wandb offline run)."""

from __future__ import annotations

import json

import pytest

from mathse_rl.demo import Encoder, TeacherRefiner, TorchSFTTrainer, build_world_model, train_steps


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    from mathse_rl.cli import main

    out = tmp_path_factory.mktemp("demo") / "run"
    assert main(["demo", "--quick", "--out", str(out)]) == 0
    return out


@pytest.mark.slow
def test_quick_demo_writes_table_json_plot_and_wandb(quick_run, capsys):
    from PIL import Image

    out = quick_run
    table = (out / "demo_table.md").read_text()
    for title in ("distillation only", "rejection sampling only", "MathSE"):
        assert title in table
    assert "| M0 (distilled on 4 teacher paths)" in table and "| round 1 |" in table
    assert "ORM on held-out paths" in table

    data = json.loads((out / "demo_results.json").read_text())
    assert set(data["arms"]) == {"rs", "mathse", "distill"}
    for rows in data["arms"].values():
        assert [r["stage"] for r in rows] == ["M0", "round 1"]
        assert all(0.0 <= r["heldout_accuracy"] <= 1.0 for r in rows)
    assert data["seeds"]["world"] == 0 and data["config"]["trainer"] == "sft"
    assert data["wall_time_s"] > 0 and "arm mathse" in data["timings_s"]
    assert data["orm"]["report"]["n"] > 0

    with Image.open(out / "heldout_accuracy.png") as img:
        img.verify()
    runs = list((out / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and any(runs[0].rglob("*.wandb"))


@pytest.mark.slow
def test_quick_demo_went_through_the_loop_and_trl(quick_run):
    out = quick_run
    for arm in ("rs", "mathse"):
        stages = [json.loads(line)["stage"] for line in (out / "arms" / arm / "stages.jsonl").read_text().splitlines()]
        assert stages[:3] == ["distill.judge", "distill.eval", "r1.generate"] and "r1.train" in stages
        # SFTBackend (trl SFTTrainer) leaves its training record next to each checkpoint
        assert (out / "arms" / arm / "checkpoints" / "r1" / "mathse_train.json").exists()
    assert "r1.reflect" in (out / "arms" / "mathse" / "stages.jsonl").read_text()
    assert "r1.reflect" not in (out / "arms" / "rs" / "stages.jsonl").read_text()
    assert (out / "models" / "orm" / "orm_train.json").exists()


def test_demo_refuses_to_delete_a_folder_it_did_not_write(tmp_path):
    from mathse_rl.cli import main

    (tmp_path / "precious.txt").write_text("keep me")
    with pytest.raises(SystemExit, match="not a demo folder"):
        main(["demo", "--quick", "--out", str(tmp_path)])
    assert (tmp_path / "precious.txt").exists()


def test_torch_trainer_backend_lowers_the_loss_on_pool_rows(tmp_path):
    import torch

    from mathse_rl.data import synthetic, teacher
    from mathse_rl.evolve import load_config
    from mathse_rl.evolve.components import solve_row
    from mathse_rl.models.tiny import load_tiny

    torch.set_num_threads(1)
    path = build_world_model(tmp_path / "m", "vlm", "XS", seed=0)
    probs = synthetic.make_split("seed", 4, seed=0)
    rows = [solve_row(p, teacher.teacher_solution(p), "distilled") for p in probs]
    model, proc = load_tiny(path)
    enc = Encoder(proc)
    losses = train_steps(model, enc, [(r, r.response) for r in rows], 8, batch_size=4, lr=1e-2, warmup=1)
    assert losses[-1] < losses[0]
    cfg = load_config(overrides=["train.max_steps=2", "train.per_device_train_batch_size=2"])
    ckpt = TorchSFTTrainer(cfg).train(rows, path, str(tmp_path / "ckpt"))
    assert (tmp_path / "ckpt" / "config.json").exists() and ckpt == str(tmp_path / "ckpt")


def test_teacher_refiner_follows_the_critique():
    import random

    from mathse_rl.data import synthetic, teacher

    p = synthetic.make_problem(0, "train", seed=0, level=2)
    wrong = teacher.inject_error(p, "misread", random.Random(0))
    good = teacher.exact_judgment(p, wrong.response)
    [[fixed]] = TeacherRefiner().refine([p], [wrong.response], [good], n=1, temperature=0.0,
                                         max_new_tokens=64, template="paper")
    assert teacher.check_steps(p, fixed).all_correct


def test_plot_legend_covers_no_point_and_the_x_axis_has_a_title():
    import matplotlib.pyplot as plt

    from mathse_rl.demo import ARM_TITLES, DemoConfig, _figure

    cfg = DemoConfig(rounds=2)
    # Points in every corner of the axes, where a legend inside them would land.
    results = {arm: [{"heldout_accuracy": y} for y in ys]
               for arm, ys in zip(ARM_TITLES, ([0.0, 0.5, 1.0], [1.0, 0.5, 0.0], [0.98, 0.02, 0.97]))}
    fig = _figure(cfg, results)
    fig.canvas.draw()
    ax = fig.axes[0]
    assert ax.get_xlabel()
    box = ax.get_legend().get_window_extent()
    for line in ax.get_lines():
        for x, y in ax.transData.transform(line.get_xydata()):
            assert not box.contains(x, y), (line.get_label(), x, y)
    plt.close(fig)
