"""Failing at the edge: one run per output directory, config typos, missing models and files,
an empty eval set, and skipped rows recorded in result.json — all before any stage is recorded."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from scripted_parts import RecordingTrainer, ScriptedGenerator, make_problems, scripted_config, seed_for

from mathse_rl.evolve import run_evolve
from mathse_rl.evolve.components import register_generator, register_trainer

TRAIN = make_problems(4)
HELDOUT = make_problems(2, prefix="h", start=10)


def _run(out: Path, heldout=HELDOUT, **fields):
    return run_evolve(scripted_config(out, rounds=1, reflect={"enabled": False}, **fields), TRAIN, heldout,
                      seed_attempts=seed_for(TRAIN[:1]), generator=ScriptedGenerator(), trainer=RecordingTrainer())


def _lock(out: Path, pid: int, host: str | None = None) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "run.lock").write_text(json.dumps({"pid": pid, "host": host or socket.gethostname(),
                                              "started": "2026-01-01T00:00:00"}))


# ----------------------------------------------------------------------------- the run lock
def test_a_second_run_on_a_held_output_directory_is_refused(tmp_path):
    from mathse_rl.evolve.lock import RunLockedError

    owner = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        _lock(tmp_path, owner.pid)
        with pytest.raises(RunLockedError, match=f"in use by pid {owner.pid} on host {socket.gethostname()}"):
            _run(tmp_path)
        assert not (tmp_path / "stages.jsonl").exists()
        assert json.loads((tmp_path / "run.lock").read_text())["pid"] == owner.pid  # left to its owner
    finally:
        owner.kill()
        owner.wait()


def test_a_lock_from_another_host_is_refused_and_a_dead_owners_lock_is_taken_over(tmp_path, caplog):
    from mathse_rl.evolve.lock import RunLockedError

    _lock(tmp_path, 1, host="some-other-node")
    with pytest.raises(RunLockedError, match="some-other-node"):
        _run(tmp_path)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    _lock(tmp_path, dead.pid)
    with caplog.at_level(logging.WARNING, logger="mathse_rl.evolve.lock"):
        result = _run(tmp_path)
    assert f"taking over the lock of pid {dead.pid}" in caplog.text
    assert "r1.eval" in result.stages and not (tmp_path / "run.lock").exists()  # released at the end


def test_the_lock_is_held_while_the_run_works(tmp_path):
    seen = []

    def fault(stage, point):
        if stage == "r1.generate" and point == "start":
            seen.append(json.loads((tmp_path / "run.lock").read_text()))

    run_evolve(scripted_config(tmp_path, rounds=1, reflect={"enabled": False}), TRAIN, HELDOUT,
               generator=ScriptedGenerator(), trainer=RecordingTrainer(), faults=fault)
    assert seen and seen[0]["pid"] == os.getpid() and seen[0]["host"] == socket.gethostname()


# ----------------------------------------------------------------------------- missing models, empty eval
def test_a_missing_model_fails_before_any_stage_is_recorded(tmp_path):
    from mathse_rl.evolve.config import ConfigError

    cfg = scripted_config(tmp_path / "run", model=str(tmp_path / "no-such-model"), rounds=1)
    with pytest.raises(ConfigError, match="no-such-model: no such model directory"):
        run_evolve(cfg, TRAIN, HELDOUT, generator=ScriptedGenerator())  # the trainer would load it
    assert not (tmp_path / "run").exists()
    cfg = scripted_config(tmp_path / "run", model="base", critic={"backend": "local", "model": "/ckpt/orm"})
    with pytest.raises(ConfigError, match="critic.model=/ckpt/orm"):
        run_evolve(cfg, TRAIN, HELDOUT, generator=ScriptedGenerator(), trainer=RecordingTrainer())


def test_an_empty_eval_set_is_an_error_unless_evaluation_is_off(tmp_path):
    from mathse_rl.evolve.config import ConfigError

    with pytest.raises(ConfigError, match="held-out set is empty.*eval.enabled=false"):
        _run(tmp_path / "a", heldout=[])
    assert not (tmp_path / "a" / "stages.jsonl").exists()
    # eval problems that all turn out unusable are the same case
    with pytest.raises(ConfigError, match="held-out set is empty"):
        _run(tmp_path / "b", heldout=[TRAIN[0]])  # a training question: excluded from held-out
    result = _run(tmp_path / "c", heldout=[], eval={"enabled": False})
    assert result.heldout[0]["accuracy"] is None


# ----------------------------------------------------------------------------- the CLI: one line, exit 2
@pytest.fixture()
def scripted_backends():
    register_generator("scripted-test", lambda config, model_path: ScriptedGenerator())
    register_trainer("recording-test", lambda config: RecordingTrainer())


def _data(tmp_path: Path, eval_rows: int = 2) -> list[str]:
    rows = []
    for p in TRAIN + HELDOUT:
        img = tmp_path / f"{p.id}.png"
        p.images[0].save(img)
        rows.append({"id": p.id, "question": p.question, "answer": p.gold, "images": [img.name]})
    train = rows[:4] + [{"id": "no-answer", "question": "What is 1 + 1?", "images": []}]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in train))
    (tmp_path / "eval.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[4:4 + eval_rows]))
    return [f"data.train={tmp_path / 'train.jsonl'}", f"data.eval={tmp_path / 'eval.jsonl'}"]


def _cli(tmp_path: Path, tiny_model: str, *extra: str) -> list[str]:
    return ["evolve", f"model={tiny_model}", f"output_dir={tmp_path / 'run'}", "rounds=1", "reflect.enabled=false",
            "generate.backend=scripted-test", "train.backend=recording-test", "tracking.report_to=[none]",
            "tracking.progress=false", "eval.k=0", *extra]


def _model_dir(tmp_path: Path) -> str:
    d = tmp_path / "model"
    d.mkdir(exist_ok=True)
    (d / "config.json").write_text("{}")
    return str(d)


@pytest.mark.parametrize("override,message", [
    ("generate.temprature=0.5", "unknown config key 'generate.temprature' (overrides); did you mean "
                                "'generate.temperature'?"),
    ("train.lerning_rate=1e-4", "did you mean 'train.learning_rate'?"),
    ("launch.num_proceses=8", "did you mean 'launch.num_processes'?"),
    ("rounds=two", "bad config value for 'rounds'"),
    ("model=/nowhere/qwen", "model=/nowhere/qwen: no such model directory"),
    ("data.eval=/nowhere/eval.jsonl", "data.eval not found: /nowhere/eval.jsonl"),
    ("launch.launcher=mpi", "launch.launcher must be one of"),
])
def test_cli_bad_settings_are_one_line_and_nothing_is_written(tmp_path, capsys, scripted_backends, override, message):
    from mathse_rl.cli import main

    assert main(_cli(tmp_path, _model_dir(tmp_path), *_data(tmp_path), override)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not (tmp_path / "run" / "stages.jsonl").exists()


def test_cli_empty_eval_file_is_an_error_and_skipped_rows_reach_result_json(tmp_path, capsys, scripted_backends):
    from mathse_rl.cli import main

    model = _model_dir(tmp_path)
    assert main(_cli(tmp_path, model, *_data(tmp_path, eval_rows=0))) == 2
    assert "held-out set is empty" in capsys.readouterr().err
    assert not (tmp_path / "run" / "stages.jsonl").exists()
    assert main(_cli(tmp_path, model, *_data(tmp_path))) == 0
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    skipped = {s["id"]: s for s in result["skipped_problems"]}
    assert skipped["no-answer"]["split"] == "train" and skipped["no-answer"]["reason"]
