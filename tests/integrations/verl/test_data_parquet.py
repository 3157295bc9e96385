"""Geometry3K-/MathVista-style records → verl parquet → back, and through verl's own dataset."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from mathse_rl.data.verl_parquet import (
    get_format,
    main,
    read_verl_parquet,
    write_verl_parquet,
)
from mathse_rl.types import Problem


def picture(colour, size=(30, 20)):
    return Image.new("RGB", size, colour)


GEO3K = {"images": [picture((255, 0, 0))], "problem": "<image>Find x. Round to the nearest tenth.", "answer": "7.2"}
MATHVISTA = {
    "pid": "17",
    "question": "Which bar is tallest?",
    "decoded_image": picture((0, 0, 255), (40, 28)),
    "choices": ["red", "green", "blue"],
    "answer": "blue",
    "question_type": "multi_choice",
    "unit": None,
}
TWO_IMAGES = Problem(id="two", question="Compare the figures.", gold="B", choices=("same", "different"),
                     images=(picture((1, 2, 3)), picture((250, 200, 100), (14, 14))), data_source="mine")


def test_records_round_trip_with_images_and_choices(tmp_path):
    problems = [get_format("geometry3k")(GEO3K, 0), get_format("mathvista")(MATHVISTA, 1), TWO_IMAGES]
    path = tmp_path / "train.parquet"
    assert write_verl_parquet(problems, path) == 3
    back = read_verl_parquet(path)

    geo, vista, two = back
    assert (geo.question, geo.gold, geo.choices) == ("Find x. Round to the nearest tenth.", "7.2", None)
    assert (vista.id, vista.gold, vista.choices) == ("17", "blue", ("red", "green", "blue"))
    assert two.choices == ("same", "different") and two.data_source == "mine"
    for original, restored in zip(problems, back):
        assert len(restored.images) == len(original.images)
        for a, b in zip(original.images, restored.images):
            assert np.array_equal(np.asarray(a.convert("RGB")), np.asarray(b))  # PNG is lossless


def test_verl_dataset_reads_the_parquet(tmp_path, tiny_vlm):
    """verl's RLHFDataset turns each row into the chat messages its agent loops receive."""
    from omegaconf import OmegaConf
    from verl.utils.dataset.rl_dataset import RLHFDataset

    path = tmp_path / "test.parquet"
    write_verl_parquet([get_format("mathvista")(MATHVISTA, 0), TWO_IMAGES], path, split="test",
                       agent_name="single_turn_agent")
    processor = tiny_vlm[1]
    config = OmegaConf.create({"image_key": "images", "prompt_key": "prompt", "max_prompt_length": 2048,
                               "filter_overlong_prompts": False, "return_raw_chat": True})
    dataset = RLHFDataset(data_files=[str(path)], tokenizer=processor.tokenizer, config=config, processor=processor)
    first, second = dataset[0], dataset[1]
    parts = second["raw_prompt"][0]["content"]
    assert [p["type"] for p in parts] == ["image", "image", "text"]
    assert parts[1]["image"].size == (14, 14)
    assert "A. same  B. different" in parts[2]["text"]
    assert second["reward_model"]["ground_truth"] == "B"
    assert list(first["extra_info"]["choices"]) == ["red", "green", "blue"]
    assert first["extra_info"]["question"] == "Which bar is tallest?"
    # verl's agent-loop worker picks each row's loop from this column: validation is not reflected
    assert first["agent_name"] == "single_turn_agent"


def test_command_line_reads_jsonl_with_image_paths(tmp_path, capsys):
    picture((9, 9, 9)).save(tmp_path / "a.png")
    records = [
        {"pid": "1", "question": "How many sides?", "image": "a.png", "choices": None, "answer": "4", "unit": "sides"},
        {"pid": "2", "question": "Broken image", "image": "missing.png", "answer": "1"},
    ]
    (tmp_path / "in.jsonl").write_text("\n".join(json.dumps(r) for r in records))
    out = tmp_path / "out"
    assert main(["--input", str(tmp_path / "in.jsonl"), "--format", "mathvista", "--split", "test",
                 "--out", str(out)]) == 0
    (problem,) = read_verl_parquet(out / "test.parquet")  # the broken record is skipped, not fatal
    assert problem.question == "How many sides? (Unit: sides)" and problem.gold == "4"
    assert len(problem.images) == 1
    assert "test: 1 rows" in capsys.readouterr().out
    import pyarrow.parquet as pq

    assert pq.read_table(out / "test.parquet").column("agent_name").to_pylist() == ["single_turn_agent"]
    assert main(["--input", str(tmp_path / "in.jsonl"), "--format", "mathvista", "--out", str(out)]) == 0
    assert "agent_name" not in pq.read_table(out / "train.parquet").column_names  # trainer's default loop


def test_unknown_format_names_the_known_ones():
    with pytest.raises(KeyError, match="geometry3k"):
        get_format("gsm8k")
