"""Benchmark releases in miniature: the fixtures (rows we wrote, in each release's own schema) laid
out as the releases lay them out, with small images drawn on the spot."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from PIL import Image

FIXTURES = Path(__file__).parent / "fixtures"


def draw(path: Path, colour=(200, 30, 30), size=(40, 30)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)


@pytest.fixture
def releases(tmp_path) -> dict[str, Path]:
    """``name -> data file`` of each miniature release, images in place."""
    out: dict[str, Path] = {}
    mv = tmp_path / "MathVista" / "data"
    mv.mkdir(parents=True)
    shutil.copy(FIXTURES / "mathvista_testmini.json", mv / "testmini.json")
    for pid in json.loads((mv / "testmini.json").read_text()):
        draw(mv / "images" / f"{pid}.jpg", (40 * int(pid), 90, 160))
    out["mathvista"] = mv / "testmini.json"
    mverse = tmp_path / "MathVerse" / "data"
    mverse.mkdir(parents=True)
    shutil.copy(FIXTURES / "mathverse_testmini.json", mverse / "testmini.json")
    for row in json.loads((mverse / "testmini.json").read_text()):
        draw(mverse / row["image"], (10, 120, 30))
    out["mathverse"] = mverse / "testmini.json"
    mathv = tmp_path / "MATH-V" / "data"
    mathv.mkdir(parents=True)
    shutil.copy(FIXTURES / "mathvision_test.jsonl", mathv / "test.jsonl")
    for line in (mathv / "test.jsonl").read_text().splitlines():
        draw(mathv / json.loads(line)["image"], (90, 90, 200))
    out["mathvision"] = mathv / "test.jsonl"
    for name in ("gsm8k", "math500"):
        path = tmp_path / name / "test.jsonl"
        path.parent.mkdir(parents=True)
        shutil.copy(FIXTURES / f"{name}_test.jsonl", path)
        out[name] = path
    return out
