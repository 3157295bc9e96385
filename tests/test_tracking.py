"""Tracker: console lines and an offline wandb run with scalars and an example table."""

from __future__ import annotations

import json
import time

import pytest
from PIL import Image

from mathse_rl.tracking import Tracker


def test_console_prints_scalars_and_keeps_history():
    lines = []
    t = Tracker(["console"], printer=lines.append)
    t.log({"stage": "r1.judge", "accept_rate": 0.25, "skipped": None, "ignored": [1, 2]}, step=1)
    t.finish()
    assert lines == ["[step 1] stage=r1.judge accept_rate=0.25"]
    assert t.history == [{"step": 1, "stage": "r1.judge", "accept_rate": 0.25, "skipped": None}]


def test_unknown_sink_fails_loudly():
    with pytest.raises(ValueError, match="unknown report_to"):
        Tracker(["tensorboard"])


def test_wandb_offline_run_gets_scalars_and_an_example_table(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    img = tmp_path / "q.png"
    Image.new("RGB", (16, 16), (255, 0, 0)).save(img)
    t = Tracker(["wandb"], project="mathse-rl-test", run_name="track", dir=str(tmp_path))
    t.log({"heldout_accuracy": 0.5, "stage": "r1.eval"}, step=1)
    t.table("reflect/examples", ["image", "question", "wrong_path", "critique", "refinement", "verdict"],
            [[str(img), "What is 2 + 3?", "... is 6.", "Step 1 adds wrong", "... is 5.", "CORRECT"],
             [str(tmp_path / "missing.png"), "What is 1 + 1?", "... is 3.", "", "... is 2.", "CORRECT"]], step=1)
    t.finish()
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    # The example table is written as a media file at once.
    tables = list(runs[0].glob("files/media/table/reflect/examples_*.table.json"))
    assert len(tables) == 1 and "What is 2 + 3?" in tables[0].read_text()
    # The image column holds the picture (a reference to a saved PNG), not the text "Image".
    rows = json.loads(tables[0].read_text())["data"]
    assert rows[0][0]["_type"] == "image-file" and (runs[0] / "files" / rows[0][0]["path"]).exists()
    assert rows[1][0] is None  # an unreadable image leaves the cell empty and the run going
    # The offline run file holds the logged history (keys stored as plain strings). wandb's
    # service process may still be flushing after finish() when it is shared with earlier
    # runs of the same test session, so give it a moment.
    run_file = next(runs[0].glob("*.wandb"))
    deadline = time.monotonic() + 20
    while b"heldout_accuracy" not in run_file.read_bytes() and time.monotonic() < deadline:
        time.sleep(0.2)
    data = run_file.read_bytes()
    assert b"heldout_accuracy" in data and b"reflect/examples" in data and b"table-file" in data
    assert len(t.tables["reflect/examples"]) == 2
