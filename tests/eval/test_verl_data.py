"""A benchmark's release as a verl validation file, scored in verl by the benchmark's own rules."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from mathse_rl.data.verl_parquet import main, read_verl_parquet
from mathse_rl.integrations.verl.scoring import compute_score


def test_converter_writes_the_benchmark_prompt_and_its_scoring_fields(releases, tmp_path, capsys):
    out = tmp_path / "verl"
    assert main(["--benchmark", "mathvista", "--data", str(releases["mathvista"]), "--out", str(out)]) == 0
    assert "testmini: 5 rows" in capsys.readouterr().out
    rows = pq.read_table(out / "testmini.parquet").to_pylist()
    second = rows[1]
    assert second["prompt"][0]["content"].startswith("<image>Hint: Please answer the question and provide the "
                                                     "correct option letter")
    assert second["agent_name"] == "single_turn_agent" and len(second["images"]) == 1
    assert second["reward_model"]["ground_truth"] == "102"
    extra = second["extra_info"]
    assert extra["benchmark"] == "mathvista" and extra["choices"] == ["97", "102", "107", "122"]
    meta = json.loads(extra["benchmark_meta"])
    assert meta["question_type"] == "multi_choice" and meta["categories"]["task"] == "geometry problem solving"
    back = read_verl_parquet(out / "testmini.parquet")
    assert back[2].meta["answer_type"] == "integer" and back[2].images[0].size == (40, 30)


def test_the_benchmark_reward_applies_the_benchmark_rules_and_falls_back_for_other_rows(releases, tmp_path):
    main(["--benchmark", "mathvista", "--data", str(releases["mathvista"]), "--out", str(tmp_path)])
    rows = pq.read_table(tmp_path / "testmini.parquet").to_pylist()
    integer = rows[2]  # answer 14: the release truncates 14.3 to 14, the plain verifier does not
    args = (integer["data_source"], "It is about 14.3.", integer["reward_model"]["ground_truth"], integer["extra_info"])
    assert compute_score(*args, reward="benchmark")["score"] == 1.0
    assert compute_score(*args, reward="verifier")["score"] == 0.0
    mc = rows[1]
    assert compute_score(mc["data_source"], "(B)", "102", mc["extra_info"], reward="benchmark")["score"] == 1.0
    plain = {"index": 0, "question": "2 + 3?", "choices": None, "benchmark": None, "benchmark_meta": None}
    assert compute_score("mine", "The answer is 5.", "5", plain, reward="benchmark")["score"] == 1.0
    assert compute_score("mine", "The answer is 6.", "5", plain, reward="benchmark")["score"] == 0.0


def test_converter_stops_on_bad_rows_and_hidden_answers(releases, tmp_path, capsys):
    (releases["mathvista"].parent / "images" / "4.jpg").unlink()
    with pytest.raises(SystemExit, match="1 rows .* cannot be used"):
        main(["--benchmark", "mathvista", "--data", str(releases["mathvista"]), "--out", str(tmp_path)])
    assert main(["--benchmark", "mathvista", "--data", str(releases["mathvista"]), "--out", str(tmp_path),
                 "--skip-bad-rows"]) == 0
    assert "4: missing image" in capsys.readouterr().out
    assert len(pq.read_table(tmp_path / "testmini.parquet")) == 4
    with pytest.raises(SystemExit, match="answers are not public"):
        main(["--benchmark", "mathvista", "--data", str(releases["mathvista"]), "--split", "test",
              "--out", str(tmp_path)])


def test_verl_reads_the_validation_file(releases, tmp_path, tiny_vlm_path):
    from omegaconf import OmegaConf
    from verl.utils.dataset.rl_dataset import RLHFDataset

    from mathse_rl.models.tiny import load_processor

    main(["--benchmark", "mathvista", "--data", str(releases["mathvista"]), "--out", str(tmp_path)])
    processor = load_processor(tiny_vlm_path)
    config = OmegaConf.create({"image_key": "images", "prompt_key": "prompt", "max_prompt_length": 4096,
                               "filter_overlong_prompts": False, "return_raw_chat": True})
    dataset = RLHFDataset(data_files=[str(tmp_path / "testmini.parquet")], tokenizer=processor.tokenizer,
                          config=config, processor=processor)
    row = dataset[1]
    parts = row["raw_prompt"][0]["content"]
    assert [p["type"] for p in parts] == ["image", "text"] and parts[1]["text"].startswith("Hint:")
    assert row["extra_info"]["benchmark"] == "mathvista" and row["agent_name"] == "single_turn_agent"


def test_the_benchmark_reward_reports_the_prediction_like_the_verifier_does(releases, tmp_path):
    main(["--benchmark", "mathvista", "--data", str(releases["mathvista"]), "--out", str(tmp_path)])
    mc = pq.read_table(tmp_path / "testmini.parquet").to_pylist()[1]
    got = compute_score(mc["data_source"], "So x = 102.", "102", mc["extra_info"], reward="benchmark")
    assert (got["pred"], got["benchmark"], got["acc"]) == ("102", "mathvista", 1.0)
    plain = compute_score("mine", "The answer is 5.", "5", {"benchmark": None}, reward="benchmark")
    assert (plain["pred"], plain["benchmark"]) == ("5", None)
