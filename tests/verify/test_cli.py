"""``mathse-rl verify``: one check on the command line, or a JSONL file with a progress bar."""

from __future__ import annotations

import json

from mathse_rl.cli import main


def test_single_check_prints_a_verdict(capsys):
    assert main(["verify", "--gold", "C", "--response", "\\boxed{14}", "--choices", "10", "12", "14", "16"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out == {"correct": True, "pred": "14", "reason": "choice", "score": 1.0}


def test_single_check_wrong_answer(capsys):
    assert main(["verify", "--gold", "7", "--response", "The answer to this problem is 8."]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["correct"] is False and out["score"] == 0.0 and out["pred"] == "8"


def test_missing_arguments_is_an_error(capsys):
    assert main(["verify", "--gold", "7"]) == 2
    assert "--response" in capsys.readouterr().err


def test_jsonl_batch_mode(tmp_path, capsys):
    rows = [
        {"id": "a", "response": "The answer to this problem is 12.", "gold": "12"},
        {"id": "b", "response": "\\boxed{B}", "gold": "14", "choices": ["10", "12", "14", "16"]},
        {"id": "c", "response": "\\boxed{0.5}", "gold": "$\\frac{1}{2}$"},
    ]
    src, dst = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    src.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    assert main(["verify", "--input", str(src), "--output", str(dst), "--batch-size", "2", "--workers", "1"]) == 0
    out = [json.loads(line) for line in dst.read_text(encoding="utf-8").splitlines()]
    assert [o["id"] for o in out] == ["a", "b", "c"]
    assert [o["correct"] for o in out] == [True, False, True]
    assert all({"score", "pred", "reason"} <= set(o) for o in out)
    err = capsys.readouterr().err
    assert "2/3 correct" in err and "verify" in err  # tqdm bar and summary go to stderr


def test_jsonl_rows_need_response_and_gold(tmp_path):
    import pytest

    src = tmp_path / "bad.jsonl"
    src.write_text(json.dumps({"response": "7"}) + "\n", encoding="utf-8")
    with pytest.raises(SystemExit, match="needs 'response' and 'gold'"):
        main(["verify", "--input", str(src)])


def test_strict_flag_refuses_an_unstated_answer(capsys):
    assert main(["verify", "--gold", "9", "--response", "we add 4 and 5 to get 9", "--strict"]) == 0
    assert json.loads(capsys.readouterr().out)["reason"] == "no_final_answer"
    assert main(["verify", "--gold", "9", "--response", "we add 4 and 5 to get 9"]) == 0
    assert json.loads(capsys.readouterr().out)["correct"] is True
